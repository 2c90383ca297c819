"""The `tagger` command as users run it: real services, one-line errors, exit codes. The
commands run in this process (``tagger.cli.run``); one test runs the installed script."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tagger.db import Item, Job, utcnow
from tests.factories import broken_bytes, jpeg_bytes, write_csv


@pytest.fixture
def env(settings_env) -> dict[str, str]:
    return dict(os.environ)


def _one_line_error(result, *needles: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_malformed_catalogue_is_refused_and_nothing_written(
    db, env, tagger_cli, artifact, tmp_path
):
    """A bad line stops the import with its line number; no item, no job is written."""
    assert tagger_cli(env, "model", "register", artifact, "--activate").returncode == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("item_id,image_uri\na,s3://b/a.jpg\nb,\n")
    _one_line_error(tagger_cli(env, "import", str(bad)), "bad.csv:line 3", "image_uri is empty")
    with db.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(Item)) == 0
        assert conn.scalar(sa.select(sa.func.count()).select_from(Job)) == 0


def test_installed_script_end_to_end(db, env):
    """The installed `tagger` script in a process of its own: an unknown job id is exit 1
    and one line on stderr."""
    script = Path(sys.executable).with_name("tagger")
    assert script.exists(), f"{script}: install the project (pip install -e .)"
    result = subprocess.run(
        [str(script), "jobs", "999"], env=env, capture_output=True, text=True, timeout=180
    )
    _one_line_error(result, "no job with id 999")
    assert result.returncode == 1 and result.stdout == ""


def test_unknown_job_and_model_version_are_one_line_errors(db, env, tagger_cli):
    """A job id or model version that does not exist gets exit 1 and one line on stderr."""
    _one_line_error(tagger_cli(env, "jobs", "999"), "no job with id 999")
    _one_line_error(tagger_cli(env, "tags", "--job", "999"), "no job with id 999")
    _one_line_error(tagger_cli(env, "model", "activate", "nope"), "unknown model version 'nope'")


def test_jobs_resume_of_a_finished_or_unknown_job(db, env, tagger_cli, session_factory, redis_db):
    """`jobs resume` of a finished job says so, exits 0 and queues nothing; an unknown id
    is a one-line error, and a missing id gets the usage."""
    from tagger.jobs import create_job
    from tagger.states import JobKind
    from tests.services import redis_client

    with session_factory.begin() as session:
        job_id = create_job(
            session=session, kind=JobKind.IMPORT, source="t", item_ids=[], batch_size=4
        ).id
    done = tagger_cli(env, "jobs", "resume", str(job_id))
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == f"job {job_id} is finished: nothing to resume"
    assert redis_client(redis_db).llen("tagger") == 0
    _one_line_error(tagger_cli(env, "jobs", "resume", "999"), "no job with id 999")
    usage = tagger_cli(env, "jobs", "resume")
    assert usage.returncode == 2 and "usage: tagger jobs resume ID" in usage.stderr


def test_bad_setting_is_named(env, tagger_cli):
    """A malformed TAGGER_* variable fails fast with the setting's name."""
    result = tagger_cli({**env, "TAGGER_BATCH_SIZE": "zero"}, "jobs")
    _one_line_error(result, "TAGGER_BATCH_SIZE")


def test_import_without_active_model_is_refused(db, env, tagger_cli, tmp_path):
    """Importing before any model is active says how to register one."""
    csv_path = write_csv(tmp_path / "c.csv", [{"item_id": "a", "image_uri": "s3://b/a.jpg"}])
    _one_line_error(tagger_cli(env, "import", str(csv_path)), "tagger model register")


def test_import_s3_prefix_upserts_every_image_under_it(
    db, env, tagger_cli, artifact, s3_client, bucket, redis_url
):
    """`import --s3-prefix` creates one item per image below the prefix, ids from the keys."""
    for key in ("cat/dresses/1.jpg", "cat/pants/2.png", "cat/notes.txt", "other/3.jpg"):
        s3_client.put_object(Bucket=bucket, Key=key, Body=jpeg_bytes())
    assert tagger_cli(env, "model", "register", artifact, "--activate").returncode == 0
    result = tagger_cli(env, "import", "--s3-prefix", f"s3://{bucket}/cat/", "--batch-size", "1")
    assert result.returncode == 0, result.stderr
    assert "2 to tag in 2 batches" in result.stderr
    with db.connect() as conn:
        items = dict(conn.execute(sa.select(Item.item_id, Item.image_uri)).all())
    assert items == {
        "dresses/1": f"s3://{bucket}/cat/dresses/1.jpg",
        "pants/2": f"s3://{bucket}/cat/pants/2.png",
    }


@pytest.mark.slow
def test_embedded_run_tags_local_files_on_sqlite(tagger_cli, artifact, tmp_path):
    """`tagger run` with SQLite and local files prints tags, JSON on request, and a failure."""
    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for i in range(5):
        (images / f"{i}.jpg").write_bytes(jpeg_bytes(i) if i else broken_bytes("truncated"))
        rows.append({"item_id": f"sku{i}", "image_uri": f"images/{i}.jpg", "title": "a dress"})
    catalogue = write_csv(tmp_path / "catalogue.csv", rows)
    env = {**os.environ, "TAGGER_DATABASE_URL": f"sqlite:///{tmp_path / 'tagger.db'}"}
    env.pop("TAGGER_BROKER_URL", None)
    result = tagger_cli(env, "run", str(catalogue), "--model", artifact, "--format", "json")
    assert result.returncode == 0, result.stderr
    tags = json.loads(result.stdout)
    assert sorted(t["item_id"] for t in tags) == ["sku1", "sku2", "sku3", "sku4"]
    assert all(t["gender"] in ("MEN", "WOMEN") for t in tags)
    assert "failed sku0: corrupt_image" in result.stderr
    rerun = tagger_cli(env, "run", str(catalogue), "--format", "json")
    assert rerun.returncode == 0 and "4 already up to date" in rerun.stderr
    assert json.loads(rerun.stdout) == tags  # nothing re-tagged, the same tags printed
    again = tagger_cli(env, "tags", "--format", "csv")
    assert again.returncode == 0 and again.stdout.count("\n") == 5  # header + 4 rows


@pytest.mark.slow
def test_embedded_run_of_a_new_model_needs_a_comparison_or_force(tagger_cli, artifact, tmp_path):
    """`tagger run --model B` over a catalogue tagged by an active A follows `model
    activate`'s rule: refused (nothing kept, A still active) without a comparison, done
    with --force; the same model again needs nothing."""
    import shutil

    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "0.jpg").write_bytes(jpeg_bytes(0))
    rows = [{"item_id": "sku0", "image_uri": "images/0.jpg", "title": "a dress"}]
    catalogue = write_csv(tmp_path / "catalogue.csv", rows)
    from tagger.review import ReviewThresholds

    other = shutil.copytree(artifact, tmp_path / "other")
    # Another artifact (another fingerprint, so another version) with the same weights:
    # review thresholds of its own.
    review = ReviewThresholds(target_precision=0.9, product={}, gender={})
    (other / "review.json").write_text(json.dumps(review.to_dict()))
    env = {**os.environ, "TAGGER_DATABASE_URL": f"sqlite:///{tmp_path / 'tagger.db'}"}
    env.pop("TAGGER_BROKER_URL", None)
    first = tagger_cli(env, "run", str(catalogue), "--model", artifact)
    assert first.returncode == 0, first.stderr
    active = json.loads(tagger_cli(env, "model", "list", "--format", "json").stdout)
    (version_a,) = [v["version"] for v in active if v["active"] == "yes"]
    refused = tagger_cli(env, "run", str(catalogue), "--model", str(other))
    assert refused.returncode != 0 and "has no comparison against the active" in refused.stderr
    listed = json.loads(tagger_cli(env, "model", "list", "--format", "json").stdout)
    assert [v["version"] for v in listed] == [version_a]
    again = tagger_cli(env, "run", str(catalogue), "--model", artifact)
    assert again.returncode == 0, again.stderr
    forced = tagger_cli(env, "run", str(catalogue), "--model", str(other), "--force")
    assert forced.returncode == 0, forced.stderr
    listed = json.loads(tagger_cli(env, "model", "list", "--format", "json").stdout)
    assert len(listed) == 2 and [v["active"] for v in listed if v["version"] == version_a] == [""]


def test_jobs_watch_ends_with_a_summary_and_exit_3_when_stalled(
    db, env, tagger_cli, session_factory
):
    """`jobs watch` of a finished job prints its summary and exits 0; of a stalled job,
    exits 3."""
    from tagger.catalogue import CatalogueItem
    from tagger.importer import import_items
    from tagger.jobs import create_job
    from tagger.states import JobKind
    from tests.factories import add_model_version

    with session_factory.begin() as session:
        finished = create_job(
            session=session, kind=JobKind.IMPORT, source="t", item_ids=[], batch_size=4
        ).id
        add_model_version(session, "v1", activate=True)
        items = [CatalogueItem(item_id=f"i{k}", image_uri=f"s3://b/{k}.jpg") for k in range(2)]
        stalled = import_items(session=session, items=items, source="t", batch_size=4).job.id
        session.execute(
            sa.update(Job).where(Job.id == stalled).values(updated_at=utcnow() - timedelta(days=1))
        )
    done = tagger_cli(env, "jobs", "watch", str(finished), "--interval", "0.1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == (
        f"job {finished} finished: 0 tagged, 0 failed, 0 skipped of 0"
    )
    stuck = tagger_cli(env, "jobs", "watch", str(stalled), "--interval", "0.1")
    assert stuck.returncode == 3, stuck.stderr
    assert stuck.stdout.strip().splitlines()[-1] == (
        f"job {stalled} stalled: 0 tagged, 0 failed, 0 skipped of 2"
    )
    _one_line_error(tagger_cli(env, "jobs", "watch", "999"), "no job with id 999")


def test_jobs_shows_statuses_and_kinds_as_plain_words(db, env, tagger_cli, session_factory):
    """`tagger jobs` prints each job's kind and status (stalled included) as the bare word
    in every format: never an enum's name or repr."""
    from tagger.jobs import create_job, mark_started
    from tagger.states import JobKind

    with session_factory.begin() as session:
        session.add_all([Item(item_id=f"i{k}", image_uri=f"/x/{k}.jpg") for k in range(3)])
        session.flush()

        def job(kind: JobKind, ids: list[str]) -> int:
            return create_job(session=session, kind=kind, source="t", item_ids=ids, batch_size=4).id

        finished, queued = job(JobKind.RUN, []), job(JobKind.IMPORT, ["i0"])
        running, stalled = job(JobKind.RETAG, ["i1"]), job(JobKind.IMPORT, ["i2"])
        mark_started(session=session, job_id=running)
        session.execute(
            sa.update(Job).where(Job.id == stalled).values(updated_at=utcnow() - timedelta(days=1))
        )
    expected = {
        finished: ("run", "finished"),
        queued: ("import", "queued"),
        running: ("retag", "running"),
        stalled: ("import", "stalled"),
    }
    shown = tagger_cli(env, "jobs", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    assert {r["id"]: (r["kind"], r["status"]) for r in json.loads(shown.stdout)} == expected
    shown = tagger_cli(env, "jobs", "--format", "csv")
    assert shown.returncode == 0, shown.stderr
    rows = csv.DictReader(io.StringIO(shown.stdout))
    assert {int(r["id"]): (r["kind"], r["status"]) for r in rows} == expected
    shown = tagger_cli(env, "jobs")
    assert shown.returncode == 0, shown.stderr
    for kind, status in expected.values():
        assert f" {kind} " in shown.stdout and f" {status} " in shown.stdout, shown.stdout
    assert "JobStatus" not in shown.stdout and "JobKind" not in shown.stdout


def test_format_outside_the_choices_is_a_usage_error(env, tagger_cli):
    """Every `--format` takes table, csv or json; anything else is exit 2 naming them."""
    for command in (["model", "list"], ["tags"], ["jobs"], ["run", "c.csv"]):
        result = tagger_cli(env, *command, "--format", "xml")
        assert result.returncode == 2, (command, result.stderr)
        assert "'xml' is not one of 'table', 'csv', 'json'" in result.stderr, result.stderr


def test_tags_shows_a_page_says_more_exist_and_csv_exports_all(
    db, env, tagger_cli, session_factory, monkeypatch
):
    """Without --limit, `tags` shows one page (PAGE_ROWS, 3 here) and names the --after of
    the next page on stderr; that page ends the rows with no message; csv streams every row."""
    from tagger.scoring import Prediction
    from tagger.tags import save_batch
    from tests.factories import add_model_version

    monkeypatch.setattr("tagger.cli.query.PAGE_ROWS", 3)
    with session_factory.begin() as s:
        add_model_version(s, "v1", activate=True)
        s.add_all([Item(item_id=f"sku{k}", image_uri=f"/x/{k}.jpg") for k in range(5)])
        s.flush()
        pred = Prediction("MEN", 0.9, "Pants", 0.8, {"gender": {}, "product": {}})
        save_batch(
            session=s,
            job_id=None,
            model_version="v1",
            failures={},
            predictions={f"sku{k}": pred for k in range(5)},
        )

    first = tagger_cli(env, "tags", "--format", "json")
    assert first.returncode == 0, first.stderr
    assert [r["item_id"] for r in json.loads(first.stdout)] == ["sku0", "sku1", "sku2"]
    assert "more exist: add --after sku2" in first.stderr
    rest = tagger_cli(env, "tags", "--format", "json", "--after", "sku2")
    assert [r["item_id"] for r in json.loads(rest.stdout)] == ["sku3", "sku4"]
    assert rest.stderr == ""
    everything = tagger_cli(env, "tags", "--format", "csv")
    assert [r["item_id"] for r in csv.DictReader(io.StringIO(everything.stdout))] == [
        f"sku{k}" for k in range(5)
    ]
    assert "more exist" not in everything.stderr
