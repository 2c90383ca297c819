"""Image storage: the only module that speaks to S3 (boto3) or reads image files.

Image URIs are parsed by :func:`tagger.uris.parse_uri` (s3://bucket/key, file:// or a
local path).

Per-item problems never raise out of :func:`fetch_many`; they come back as ItemError
values so one bad image cannot fail a batch.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Container, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
from billiard.exceptions import SoftTimeLimitExceeded
from botocore.exceptions import BotoCoreError, ClientError

from tagger.exceptions import (
    AccessDenied,
    ConfigError,
    ItemError,
    MissingImage,
    StorageError,
    StorageRejected,
    TooLarge,
)
from tagger.uris import ParsedUri, is_s3, parse_uri

if TYPE_CHECKING:
    from tagger.settings import Settings

log = logging.getLogger(__name__)

S3Client = Any  # boto3 clients are generated at run time; no stubs are installed
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif")

_USERINFO = re.compile(r"//[^/@\s]+@")  # user:password@ in an endpoint URL


def make_s3_client(settings: Settings, *, signature_version: str | None = None) -> S3Client:
    """One S3 client per process (after the fork), shared by all fetch threads.
    ``signature_version``: botocore's default unless given (the page presigns with s3v4).

    A new Session each call: sessions are not thread-safe and must not cross a fork;
    the client they make is thread-safe. Credentials come from the standard AWS
    environment variables / profile, read by boto3 itself, and are never logged here.
    """
    config = botocore.config.Config(
        # 'legacy' (the default) does not retry S3 SlowDown / 503 throttling; 'standard'
        # does, with jittered exponential back-off. total_max_attempts counts the first
        # try (like AWS_MAX_ATTEMPTS); botocore's "max_attempts" key would count retries
        # only, making s3_max_attempts=1 mean two requests.
        retries={"mode": "standard", "total_max_attempts": settings.s3_max_attempts},
        # Without explicit timeouts a stalled connection holds a fetch thread for minutes.
        connect_timeout=settings.s3_connect_timeout,
        read_timeout=settings.s3_read_timeout,
        # At least one pooled connection per fetch thread, or threads queue for sockets
        # and urllib3 warns "Connection pool is full, discarding connection".
        max_pool_connections=settings.s3_max_pool_connections,
        signature_version=signature_version,
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        config=config,
    )


def iter_objects(
    client: S3Client, *, bucket: str, prefix: str, page_size: int | None = None
) -> Iterator[dict[str, Any]]:
    """Every object under ``prefix`` in ``bucket``, as list_objects_v2 ``Contents`` dicts
    (Key, Size, ETag, ...) in key order. Pages (up to ``page_size`` or 1000 keys) are
    fetched as the caller iterates, so a huge prefix is never held in memory; botocore
    errors propagate for the caller to classify."""
    pagination = {"PageSize": page_size} if page_size else {}
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, PaginationConfig=pagination
    )
    for page in pages:
        yield from page.get("Contents", [])


def fetch_many(
    uris: Sequence[str], *, s3_client: S3Client | None, concurrency: int, max_bytes: int
) -> dict[str, bytes | ItemError]:
    """Fetch every URI with ``concurrency`` threads sharing ``s3_client``.

    Each value is the object's bytes or an ItemError: MissingImage (no such key, bucket or
    file, or a URI that does not parse: retrying cannot help), TooLarge (over
    ``max_bytes``; detected from the size before the body is read), AccessDenied /
    StorageRejected (403, an unreadable local file, other client errors that retrying
    cannot fix: not transient) or StorageError (transient: throttling, 5xx, timeouts,
    refused or reset connections, short bodies, after boto3's own retries);
    :func:`classify_error` decides for S3. Raises ConfigError only when there are s3://
    URIs and no client. Duplicate URIs are fetched once.
    """
    unique = list(dict.fromkeys(uris))
    if s3_client is None and any(is_s3(u, any_case=True) for u in unique):
        raise ConfigError("s3:// image URIs need an S3 client (see make_s3_client)")
    if not unique:
        return {}
    if s3_client is not None:
        pool_size = s3_client.meta.config.max_pool_connections
        if concurrency > pool_size:
            log.warning(
                "fetch concurrency %d exceeds the S3 client's connection pool (%d); "
                "threads will wait for connections",
                concurrency,
                pool_size,
            )

    def one(uri: str) -> bytes | ItemError:
        try:
            return fetch_one(uri, s3_client=s3_client, max_bytes=max_bytes)
        except ItemError as e:
            return e
        except SoftTimeLimitExceeded:
            raise  # the batch's time is up (raised in this thread when it runs inline)
        except Exception as e:  # a bug must not take the other items down with it
            log.exception("unexpected error fetching %s", uri)
            return StorageError(f"unexpected {type(e).__name__} fetching {uri}: {e}")

    workers = max(1, min(concurrency, len(unique)))
    if workers == 1:
        return {u: one(u) for u in unique}
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch")
    try:
        return dict(zip(unique, pool.map(one, unique), strict=True))
    finally:
        # Normally every fetch is done here. When the batch's soft time limit interrupts
        # the wait, do not wait for a hung fetch too: the task hands the batch back now.
        pool.shutdown(wait=False, cancel_futures=True)


def fetch_one(uri: str, *, s3_client: S3Client | None, max_bytes: int) -> bytes:
    """Fetch one image's bytes; raises the ItemError that :func:`fetch_many` returns."""
    try:
        parsed = parse_uri(uri)
    except ValueError as e:
        raise MissingImage(f"unsupported image URI: {e}") from None
    if parsed.scheme == "s3":
        if s3_client is None:
            raise ConfigError("s3:// image URIs need an S3 client (see make_s3_client)")
        return _fetch_s3(s3_client, parsed, max_bytes)
    assert parsed.path is not None
    return _fetch_local(parsed.path, max_bytes)


def _fetch_s3(client: S3Client, parsed: ParsedUri, max_bytes: int) -> bytes:
    try:
        resp = client.get_object(Bucket=parsed.bucket, Key=parsed.key)
        body = resp["Body"]
        length = resp.get("ContentLength")
        if length is not None and length > max_bytes:
            body.close()  # drop the connection rather than stream a huge object
            raise TooLarge(f"{length:,} bytes, limit {max_bytes:,}: {parsed}")
        # Read at most one byte past the limit, in case no length was sent.
        data = body.read(max_bytes + 1)
        body.close()
    except _S3_FAILURES as e:
        raise classify_error(e, parsed) from None
    if len(data) > max_bytes:
        raise TooLarge(f"over {max_bytes:,} bytes: {parsed}")
    if length is not None and len(data) != length:
        raise StorageError(f"short read ({len(data)} of {length} bytes): {parsed}")
    return data


def _fetch_local(path: Path, max_bytes: int) -> bytes:
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise TooLarge(f"{size:,} bytes, limit {max_bytes:,}: {path}")
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise MissingImage(f"no such file: {path}") from None
    except (IsADirectoryError, NotADirectoryError):
        raise MissingImage(f"not a file: {path}") from None
    except PermissionError:  # like S3's 403: the same answer on every retry
        raise AccessDenied(f"permission denied: {path}") from None
    except OSError as e:  # I/O errors, stale NFS handles: may pass
        raise StorageError(f"cannot read {path}: {e.strerror or e}") from None
    if len(data) > max_bytes:  # grew while we read it
        raise TooLarge(f"over {max_bytes:,} bytes: {path}")
    return data


def s3_fingerprint(etag: str, size: int) -> str:
    etag = etag.strip('"')  # S3 sends ETags quoted; store them bare
    return f"etag={etag};size={size}"


def local_fingerprint(mtime_ns: int, size: int) -> str:
    return f"mtime_ns={mtime_ns};size={size}"


# --- classifying storage errors ----------------------------------------------------------
# Every S3 failure becomes an ItemError here and nowhere else. What matters is whether a
# retry can change the answer: transient StorageErrors are deferred and the task retries
# them with back-off; the others are failure rows at once.

_ACCESS_HINT = (
    "; check credentials and policy (without s3:ListBucket a missing key also reads as "
    "AccessDenied)"
)

#: S3 error code → (error, what the message says). Looked up first: the code is more precise
#: than the status (RequestTimeout is a 400 that a retry does fix). HEAD answers have no
#: body, so for them botocore's "code" is the HTTP status ("404", "403").
_BY_CODE: dict[str, tuple[type[ItemError], str]] = {
    "NoSuchKey": (MissingImage, "no such object"),
    "NotFound": (MissingImage, "no such object"),
    "404": (MissingImage, "no such object"),
    "NoSuchBucket": (MissingImage, "no such bucket"),
    "InvalidObjectState": (MissingImage, "object is archived (restore it first)"),
    "AccessDenied": (AccessDenied, "access denied"),  # 403, whatever status an S3 clone sends
    "RequestTimeout": (StorageError, "S3 timed out waiting for the request"),  # 400
    "RequestTimeTooSkewed": (StorageError, "clock skew"),  # 403; botocore re-syncs its clock
    "ExpiredToken": (StorageError, "expired session token"),  # 400; credentials refresh
    "SlowDown": (StorageError, "throttled by S3"),  # 503
}

#: HTTP status → (error, what the message says), for codes not in the table above; the
#: first row whose statuses contain it wins, and anything else is transient.
_BY_STATUS: tuple[tuple[Container[int], type[ItemError], str], ...] = (
    ({408}, StorageError, "request timeout"),
    ({429}, StorageError, "throttled"),
    ({401, 403}, AccessDenied, "access denied"),
    (range(400, 500), StorageRejected, "S3 rejected the request"),
    (range(500, 600), StorageError, "S3 server error"),
)

#: Failures on the way to S3 or while reading a body (timeouts, refused or reset
#: connections, broken streams): transient. OSError covers socket errors urllib3 lets by.
_S3_FAILURES = (ClientError, BotoCoreError, OSError)


def classify_error(e: Exception, parsed: ParsedUri) -> ItemError:
    """The ItemError for an exception from an S3 call on ``parsed`` (see the tables above).

    Messages name the URI, the S3 code and the HTTP status, never the server's message
    text or the request (which could carry credentials).
    """
    if isinstance(e, ClientError):
        code, status = error_code(e), http_status(e)
        kind, what = _BY_CODE.get(code) or _by_status(status)
        if kind is MissingImage:
            return MissingImage(f"{what}: {parsed}")
        label = ", ".join(dict.fromkeys(str(x) for x in (code, status) if x)) or "no code"
        hint = _ACCESS_HINT if kind is AccessDenied else ""
        return kind(f"{what} ({label}): {parsed}{hint}")
    # Not an answer from S3: the connection or the stream failed; worth retrying.
    detail = _USERINFO.sub("//***@", str(e))
    return StorageError(f"{type(e).__name__}: {detail} ({parsed})")


def _by_status(status: int | None) -> tuple[type[ItemError], str]:
    for statuses, kind, what in _BY_STATUS:
        if status is not None and status in statuses:
            return kind, what
    return StorageError, "S3 error"


def error_code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def http_status(e: ClientError) -> int | None:
    status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def storage_error(e: Exception, parsed: ParsedUri) -> StorageError:
    """:func:`classify_error` for callers that handled a missing bucket/key themselves
    (listing): always a StorageError, transient or not."""
    err = classify_error(e, parsed)
    return err if isinstance(err, StorageError) else StorageError(str(err))
