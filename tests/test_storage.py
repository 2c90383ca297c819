"""Storage: fetching from the moto S3 server and local files, listing, failures.

S3 is moto's server over HTTP (tests/conftest.py). Faults moto cannot produce (503
SlowDown, 403, a stalled or reset body) come from the fault proxy in front of it
(tests/faultproxy.py) or, for answers with no object behind them, a tiny HTTP server on
127.0.0.1 that answers like S3 would; boto3 talks to both over real sockets.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from tagger.exceptions import (
    AccessDenied,
    ConfigError,
    MissingImage,
    StorageError,
    StorageRejected,
    TooLarge,
)
from tagger.settings import Settings
from tagger.storage import classify_error, fetch_many, make_s3_client
from tagger.uris import ParsedUri, parse_uri
from tests import faultproxy
from tests.faultproxy import Deny, ResetBody, SlowDown, StallBody
from tests.services import free_port

fault_proxy = faultproxy.fault_proxy  # the fixture (assigned, not imported: see faultproxy)

MAX = 10_000


def blob(i: int, n: int = 500) -> bytes:
    return bytes((i * 7 + j) % 256 for j in range(n))


@pytest.fixture
def client(s3_endpoint):
    """A client made the way workers make it, pointed at the moto server."""
    return make_s3_client(Settings(s3_endpoint_url=s3_endpoint, fetch_concurrency=8))


def fast_failing_client(endpoint: str, attempts: int = 1, read_timeout: float = 0.5):
    return make_s3_client(
        Settings(
            s3_endpoint_url=endpoint,
            s3_max_attempts=attempts,
            s3_connect_timeout=0.5,
            s3_read_timeout=read_timeout,
        )
    )


# --- make_s3_client ----------------------------------------------------------------------


def test_make_s3_client_config():
    """Standard retries, explicit timeouts and a pool at least as large as the fetch threads."""
    settings = Settings(
        s3_endpoint_url="http://127.0.0.1:9",
        fetch_concurrency=32,
        s3_max_attempts=7,
        s3_connect_timeout=2.5,
        s3_read_timeout=11,
    )
    config = make_s3_client(settings).meta.config
    # total_max_attempts includes the first request: 7 means 1 try + 6 retries
    assert config.retries == {"mode": "standard", "total_max_attempts": 7}
    assert (config.connect_timeout, config.read_timeout) == (2.5, 11)
    assert config.max_pool_connections >= 32
    assert make_s3_client(Settings()).meta.config.max_pool_connections >= 16


# --- fetch_many: S3 ----------------------------------------------------------------------


def test_fetch_many_from_s3_mixed_results(client, bucket, tmp_path):
    """One concurrent call returns bytes, MissingImage and TooLarge per item, never raising."""
    present = {f"s3://{bucket}/imgs/{i:02d}.jpg": blob(i) for i in range(15)}
    present[f"s3://{bucket}/imgs/robe été 1.jpg"] = blob(99)
    for uri, data in present.items():
        client.put_object(Bucket=bucket, Key=parse_uri(uri).key, Body=data)
    big = [f"s3://{bucket}/imgs/big{i}.jpg" for i in range(2)]
    for uri in big:
        client.put_object(Bucket=bucket, Key=parse_uri(uri).key, Body=b"x" * (MAX + 1))
    missing = [f"s3://{bucket}/imgs/missing{i}.jpg" for i in range(2)]
    local = tmp_path / "local.png"
    local.write_bytes(blob(7))
    odd = ["s3://no-such-bucket-here/x.jpg", "http://example.com/x.jpg", str(local)]
    uris = [*present, *big, *missing, *odd, next(iter(present))]  # one duplicate

    out = fetch_many(uris, s3_client=client, concurrency=8, max_bytes=MAX)

    assert list(out) == list(dict.fromkeys(uris))
    assert {u: out[u] for u in present} == present
    assert out[str(local)] == blob(7)
    for uri in big:
        assert isinstance(out[uri], TooLarge) and "10,001 bytes" in str(out[uri])
    for uri in missing:
        assert isinstance(out[uri], MissingImage) and uri in str(out[uri])
    assert isinstance(out[odd[0]], MissingImage) and "no such bucket" in str(out[odd[0]])
    assert isinstance(out[odd[1]], MissingImage) and "unsupported" in str(out[odd[1]])


def test_fetch_many_needs_a_client_for_s3_uris():
    """s3:// URIs with no client is a configuration error, raised before fetching anything."""
    with pytest.raises(ConfigError):
        fetch_many(["s3://b/k.jpg"], s3_client=None, concurrency=2, max_bytes=MAX)
    assert fetch_many([], s3_client=None, concurrency=2, max_bytes=MAX) == {}


def test_refused_connection_is_storage_error():
    """An endpoint that refuses connections gives transient StorageError items, quickly."""
    client = fast_failing_client(f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    out = fetch_many(
        ["s3://b/1.jpg", "s3://b/2.jpg"], s3_client=client, concurrency=2, max_bytes=MAX
    )
    assert time.monotonic() - started < 5
    for err in out.values():
        assert isinstance(err, StorageError) and err.transient
        assert "EndpointConnectionError" in str(err)


class FaultyS3(BaseHTTPRequestHandler):
    """Answers GetObject the way a struggling S3 does, chosen by the key name."""

    requests: list[str]

    def do_GET(self):
        self.requests.append(self.path)
        if "slowdown" in self.path:
            body = (
                b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"
            )
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif "huge" in self.path:  # claims 2 GB, sends a little, then stalls
            self.send_response(200)
            self.send_header("Content-Length", str(2 * 10**9))
            self.end_headers()
            self.wfile.write(b"x" * 100)
            time.sleep(3)
        elif "stall" in self.path:  # headers never come
            time.sleep(3)

    def log_message(self, *args):
        pass


@pytest.fixture
def faulty_s3():
    FaultyS3.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FaultyS3)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_slowdown_is_retried_then_storage_error(faulty_s3):
    """503 SlowDown is retried by boto3's standard mode, then reported as StorageError."""
    client = fast_failing_client(faulty_s3, attempts=2)
    out = fetch_many(["s3://b/slowdown.jpg"], s3_client=client, concurrency=1, max_bytes=MAX)
    err = out["s3://b/slowdown.jpg"]
    assert isinstance(err, StorageError) and "SlowDown" in str(err)
    assert len(FaultyS3.requests) == 2


def test_oversize_object_is_rejected_without_reading_the_body(faulty_s3):
    """A 2 GB Content-Length is TooLarge at once: the body is never streamed."""
    client = fast_failing_client(faulty_s3, read_timeout=2)
    started = time.monotonic()
    out = fetch_many(["s3://b/huge.jpg"], s3_client=client, concurrency=1, max_bytes=MAX)
    assert isinstance(out["s3://b/huge.jpg"], TooLarge)
    assert time.monotonic() - started < 1.5


def test_read_timeout_is_storage_error(faulty_s3):
    """A server that never answers hits the read timeout and becomes StorageError."""
    client = fast_failing_client(faulty_s3, read_timeout=0.3)
    out = fetch_many(["s3://b/stall.jpg"], s3_client=client, concurrency=1, max_bytes=MAX)
    assert isinstance(out["s3://b/stall.jpg"], StorageError)
    assert "ReadTimeout" in str(out["s3://b/stall.jpg"])


# --- error classification ----------------------------------------------------------------

URI = ParsedUri("s3", bucket="b", key="k/x.jpg")


def client_error(code: str, status: int) -> ClientError:
    response = {
        "Error": {"Code": code, "Message": "server text with secret-ish details"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "GetObject")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "status", "kind", "transient"),
    [
        ("NoSuchKey", 404, MissingImage, False),
        ("404", 404, MissingImage, False),  # HEAD: no body, the status is the code
        ("NoSuchBucket", 404, MissingImage, False),
        ("AccessDenied", 403, AccessDenied, False),
        ("403", 403, AccessDenied, False),
        ("InvalidAccessKeyId", 403, AccessDenied, False),
        ("InvalidRequest", 400, StorageRejected, False),
        ("400", 400, StorageRejected, False),
        ("PreconditionFailed", 412, StorageRejected, False),
        ("RequestTimeout", 400, StorageError, True),
        ("ExpiredToken", 400, StorageError, True),
        ("RequestTimeTooSkewed", 403, StorageError, True),
        ("SlowDown", 503, StorageError, True),
        ("TooManyRequests", 429, StorageError, True),
        ("InternalError", 500, StorageError, True),
        ("ServiceUnavailable", 503, StorageError, True),
        ("Weird", 302, StorageError, True),  # unknown: retrying is the safe side
    ],
)
def test_classify_client_errors(code, status, kind, transient):
    """Missing → MissingImage; 403 and unfixable 4xx → permanent; throttling/5xx → transient."""
    err = classify_error(client_error(code, status), URI)
    assert type(err) is kind and err.transient is transient
    assert "s3://b/k/x.jpg" in str(err) and "server text" not in str(err)
    if kind is not MissingImage:
        assert code in str(err)


def test_access_denied_has_its_own_reason_code():
    """403 is recorded as access_denied; other refusals keep storage_error, both permanent."""
    assert AccessDenied("x").reason == "access_denied"
    assert StorageRejected("x").reason == "storage_error"
    assert isinstance(AccessDenied("x"), StorageError)  # callers catching StorageError see it


def test_classify_connection_errors_as_transient_without_credentials():
    """Failures below HTTP are transient StorageErrors; credentials in a URL are masked."""
    url = "http://AKIDEXAMPLE:wJalrXUtnFEMI@s3.example.com/b/k/x.jpg"
    for exc in (EndpointConnectionError(endpoint_url=url), ConnectionResetError(104, "reset")):
        err = classify_error(exc, URI)
        assert type(err) is StorageError and err.transient
        assert "s3://b/k/x.jpg" in str(err) and type(exc).__name__ in str(err)
        assert "wJalrXUtnFEMI" not in str(err) and "AKIDEXAMPLE" not in str(err)


# --- faults through the proxy (real HTTP to moto) ------------------------------------------


@pytest.fixture
def image(s3_client, bucket) -> str:
    """An object of 64 KiB on the moto server (big enough to cut mid-body); its URI."""
    s3_client.put_object(Bucket=bucket, Key="faults/img.jpg", Body=blob(3, 64 * 1024))
    return f"s3://{bucket}/faults/img.jpg"


def via(proxy, *, attempts: int = 5, read_timeout: float = 5) -> object:
    """A client made the way workers make it, pointed at the fault proxy."""
    settings = Settings(
        s3_endpoint_url=proxy.url, s3_max_attempts=attempts, s3_read_timeout=read_timeout
    )
    return make_s3_client(settings)


def fetch(client, uri: str) -> bytes | Exception:
    return fetch_many([uri], s3_client=client, concurrency=1, max_bytes=10**6)[uri]


def test_slowdown_twice_then_the_object(fault_proxy, image):
    """503 SlowDown twice: boto3's standard retries get the bytes on the third GET."""
    fault_proxy.add_rule("faults/img.jpg", SlowDown(), times=2)
    assert fetch(via(fault_proxy), image) == blob(3, 64 * 1024)
    assert fault_proxy.hits("faults/img.jpg", method="GET") == 3


def test_access_denied_is_permanent_and_fetched_once(fault_proxy, image):
    """403 AccessDenied is a permanent AccessDenied after exactly one GET."""
    fault_proxy.add_rule("faults/img.jpg", Deny())
    client = via(fault_proxy)
    err = fetch(client, image)
    assert isinstance(err, AccessDenied) and not err.transient
    assert err.reason == "access_denied" and image in str(err)
    assert fault_proxy.hits("faults/img.jpg", method="GET") == 1


def test_stalled_body_is_transient_within_the_read_timeout(fault_proxy, image):
    """Headers and half a body, then silence: a transient StorageError after the read timeout."""
    fault_proxy.add_rule("faults/img.jpg", StallBody(seconds=5))
    started = time.monotonic()
    err = fetch(via(fault_proxy, read_timeout=0.5), image)
    elapsed = time.monotonic() - started
    assert isinstance(err, StorageError) and err.transient, err
    assert "ReadTimeout" in str(err) and image in str(err)
    assert 0.5 <= elapsed < 2.5
    assert fault_proxy.hits("faults/img.jpg") == 1


def test_reset_mid_body_is_transient(fault_proxy, image):
    """A connection reset mid-body is a transient StorageError (the task retries it)."""
    fault_proxy.add_rule("faults/img.jpg", ResetBody(), times=1)
    client = via(fault_proxy)
    err = fetch(client, image)
    assert isinstance(err, StorageError) and err.transient, err
    assert image in str(err)
    assert fetch(client, image) == blob(3, 64 * 1024)  # the next try gets it whole


# --- fetch_many: local files --------------------------------------------------------------


def test_fetch_many_local_files(tmp_path):
    """Local paths and file:// URIs: bytes, MissingImage for absent files/dirs, TooLarge."""
    (tmp_path / "a b.jpg").write_bytes(blob(1))
    (tmp_path / "big.jpg").write_bytes(b"x" * (MAX + 1))
    (tmp_path / "dir.jpg").mkdir()
    uris = [
        str(tmp_path / "a b.jpg"),
        (tmp_path / "a b.jpg").as_uri(),
        str(tmp_path / "big.jpg"),
        str(tmp_path / "nope.jpg"),
        str(tmp_path / "dir.jpg"),
    ]
    out = fetch_many(uris, s3_client=None, concurrency=4, max_bytes=MAX)
    assert out[uris[0]] == out[uris[1]] == blob(1)
    assert isinstance(out[uris[2]], TooLarge)
    assert isinstance(out[uris[3]], MissingImage) and "no such file" in str(out[uris[3]])
    assert isinstance(out[uris[4]], MissingImage)


def test_unreadable_local_file_is_access_denied(tmp_path, monkeypatch):
    """A local file we may not read fails like an S3 403: AccessDenied, not retried."""
    path = tmp_path / "locked.jpg"
    path.write_bytes(blob(1))

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", refuse)  # chmod 000 does not stop root
    err = fetch_many([str(path)], s3_client=None, concurrency=1, max_bytes=MAX)[str(path)]
    assert isinstance(err, AccessDenied) and not err.transient and str(path) in str(err)
