"""Storage faults end to end: a real `tagger worker` process whose S3 endpoint is the fault
proxy in front of moto. Throttling and broken connections are retried until the items are
tagged; 403 fails its item at once; nothing is lost or tagged twice."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

from tagger.db import Failure, current_tags
from tests import faultproxy
from tests.factories import make_s3_catalogue, write_csv
from tests.faultproxy import Deny, ResetBody, SlowDown
from tests.processes import start_worker, stop, wait_for_job

pytestmark = pytest.mark.slow

fault_proxy = faultproxy.fault_proxy  # the fixture (assigned, not imported: see faultproxy)

SLOW = "sku-00001"  # 503 SlowDown twice, then the object: boto3's own retries get it
DENIED = "sku-00004"  # 403 AccessDenied, always: failed at once
RESET = "sku-00007"  # reset mid-body once: deferred, tagged by the task's retry


def test_worker_retries_transient_faults_and_fails_access_denied_at_once(
    db, settings_env, tagger_cli, fault_proxy, s3_client, bucket, artifact, tmp_path
):
    """Through the fault proxy: SlowDown and reset items get tagged, the 403 item fails as
    access_denied after one GET, every good item is tagged once and the counters add up."""
    rows, _ = make_s3_catalogue(s3_client, bucket, n=12, prefix="faults")
    key = {r["item_id"]: r["image_uri"].split("/", 3)[3] for r in rows}
    fault_proxy.add_rule(key[SLOW], SlowDown(), times=2)
    fault_proxy.add_rule(key[DENIED], Deny())
    fault_proxy.add_rule(key[RESET], ResetBody(), times=1)

    env = {**os.environ, "TAGGER_LOG_LEVEL": "INFO"}  # settings_env: test Postgres/Redis/S3
    reg = tagger_cli(env, "model", "register", artifact, "--activate", "--version", "faults-v1")
    assert reg.returncode == 0, reg.stderr
    catalogue = write_csv(tmp_path / "catalogue.csv", rows)
    # Batches of 4: DENIED and RESET share one, so its retry must carry RESET alone.
    imp = tagger_cli(env, "import", str(catalogue), "--batch-size", "4")
    assert imp.returncode == 0, imp.stderr
    job_id = int(imp.stdout.strip())

    worker_env = {
        **env,
        "TAGGER_S3_ENDPOINT_URL": fault_proxy.url,
        "TAGGER_S3_READ_TIMEOUT": "2",
        "TAGGER_S3_CONNECT_TIMEOUT": "2",
        "TAGGER_RETRY_BACKOFF_MAX": "1",  # task retries within a second
    }
    log = tmp_path / "worker.log"
    worker = start_worker(worker_env, "faults", log)
    try:
        job = wait_for_job(db, job_id, [worker], timeout=300)
    finally:
        stop([worker])

    assert job.status == "finished", log.read_text()[-3000:]
    assert (job.total, job.done, job.failed) == (12, 11, 1), log.read_text()[-3000:]
    assert job.total == job.done + job.failed
    with db.connect() as conn:
        tagged = conn.execute(sa.select(current_tags.c.item_id)).scalars().all()
        failures = conn.execute(sa.select(Failure.item_id, Failure.reason, Failure.attempts)).all()
    good = sorted(r["item_id"] for r in rows if r["item_id"] != DENIED)
    assert sorted(tagged) == good  # exactly one current tag per good item
    assert [tuple(f) for f in failures] == [(DENIED, "access_denied", 1)]

    gets = {item: fault_proxy.hits(k, method="GET") for item, k in key.items()}
    assert gets[DENIED] == 1  # permanent: never asked again
    assert gets[SLOW] == 3  # two 503s, then the object, within one task attempt
    assert gets[RESET] == 2  # the cut-off GET, then the task's retry
    others = {item: n for item, n in gets.items() if item not in (SLOW, DENIED, RESET)}
    assert set(others.values()) == {1}, others  # good items fetched once: no duplicate work
