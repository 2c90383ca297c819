"""The fault proxy itself, spoken to with plain http.client (presigned URLs: moto refuses
anonymous requests) so that boto3's retries don't hide what it answers."""

from __future__ import annotations

import http.client
import time
from urllib.parse import urlsplit

import boto3
import pytest

from tests import faultproxy
from tests.faultproxy import Deny, FaultProxy, Hook, ResetBody, SlowDown, StallBody

# The fixture, by assignment: a `from ... import fault_proxy` would be flagged (F811) by
# every test that takes it as an argument.
fault_proxy = faultproxy.fault_proxy

BODY = bytes(range(256)) * 40  # 10 KiB
KEY = "dir/été 1.jpg"


@pytest.fixture
def obj(s3_client, bucket, fault_proxy) -> dict[str, str]:
    """Presigned paths (with query) through the proxy to GET and HEAD a 10 KiB object."""
    s3_client.put_object(Bucket=bucket, Key=KEY, Body=BODY)
    via_proxy = boto3.client("s3", endpoint_url=fault_proxy.url, region_name="us-east-1")
    paths = {}
    for method, operation in (("GET", "get_object"), ("HEAD", "head_object")):
        url = via_proxy.generate_presigned_url(operation, Params={"Bucket": bucket, "Key": KEY})
        paths[method] = url.removeprefix(fault_proxy.url)
    return paths


def get(proxy: FaultProxy, obj: dict[str, str], method: str = "GET"):
    """(status, headers, body) of one request through the proxy, on a new connection."""
    conn = http.client.HTTPConnection(urlsplit(proxy.url).netloc, timeout=5)
    try:
        conn.request(method, obj[method])
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_passes_requests_through_and_counts_them(fault_proxy, obj):
    """Without rules GET and HEAD reach moto; hits count them per key, decoded, by method."""
    assert get(fault_proxy, obj)[::2] == (200, BODY)
    status, headers, body = get(fault_proxy, obj, "HEAD")
    assert (status, body, headers["Content-Length"]) == (200, b"", str(len(BODY)))
    assert fault_proxy.hits("été 1.jpg") == 2
    assert fault_proxy.hits("été 1.jpg", method="get") == 1
    assert fault_proxy.hits("other.jpg") == 0


def test_slowdown_n_times_then_passes_through(fault_proxy, obj):
    """SlowDown with times=2: two 503s with an S3 XML error body, then the object."""
    fault_proxy.add_rule("été 1", SlowDown(), times=2)
    for _ in range(2):
        status, headers, body = get(fault_proxy, obj)
        assert status == 503 and headers["Content-Type"] == "application/xml"
        assert b"<Code>SlowDown</Code>" in body and b"<Error>" in body
    assert get(fault_proxy, obj)[::2] == (200, BODY)
    assert fault_proxy.hits("été 1") == 3


def test_deny_answers_403_to_get_and_head(fault_proxy, obj):
    """Deny is 403 AccessDenied every time; a HEAD gets the status without a body."""
    fault_proxy.add_rule("été", Deny())
    status, _, body = get(fault_proxy, obj)
    assert status == 403 and b"<Code>AccessDenied</Code>" in body
    assert get(fault_proxy, obj, "HEAD")[::2] == (403, b"")
    fault_proxy.clear_rules()  # rules change while the proxy runs
    assert get(fault_proxy, obj)[0] == 200


def test_stall_sends_headers_and_part_of_the_body_then_nothing(fault_proxy, obj):
    """StallBody: full headers, half the body, then silence past the client's timeout."""
    fault_proxy.add_rule("été", StallBody(seconds=3), times=1)
    conn = http.client.HTTPConnection(urlsplit(fault_proxy.url).netloc, timeout=0.5)
    conn.request("GET", obj["GET"])
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Length") == str(len(BODY))
    assert resp.read(len(BODY) // 2) == BODY[: len(BODY) // 2]
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        resp.read(1)
    assert time.monotonic() - started < 2
    conn.close()
    assert get(fault_proxy, obj)[::2] == (200, BODY)  # times=1: the next one is whole


def test_reset_drops_the_connection_mid_body(fault_proxy, obj):
    """ResetBody: headers and part of the body, then ECONNRESET (not a clean close)."""
    fault_proxy.add_rule("été", ResetBody(fraction=0.25), times=1)
    conn = http.client.HTTPConnection(urlsplit(fault_proxy.url).netloc, timeout=5)
    conn.request("GET", obj["GET"])
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises((ConnectionResetError, http.client.IncompleteRead)) as err:
        # A few reads: some of the sent bytes may arrive before the reset does.
        for _ in range(4):
            resp.read(len(BODY))
    if isinstance(err.value, http.client.IncompleteRead):  # bytes arrived, then the RST
        assert len(err.value.partial) <= len(BODY) // 4
    conn.close()


def test_hook_runs_before_forwarding_and_rules_apply_in_order(fault_proxy, obj, bucket):
    """Hook gets the key before the request is forwarded; the first rule that applies wins."""
    seen: list[tuple[str, int]] = []
    fault_proxy.add_rule(
        "été", Hook(lambda key: seen.append((key, fault_proxy.hits(key)))), times=1
    )
    fault_proxy.add_rule("été", Deny(), method="HEAD")
    assert get(fault_proxy, obj)[0] == 200
    assert seen == [(f"{bucket}/{KEY}", 1)]
    assert get(fault_proxy, obj, "HEAD")[0] == 403
    assert get(fault_proxy, obj)[0] == 200
    assert len(seen) == 1
