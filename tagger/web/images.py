"""Where the page shows an item's image from.

``s3://`` images: a presigned GET URL, signed here with the process's S3 client (no
request to S3 is made) and valid for ``presign_seconds``. The browser fetches the object
from S3 directly; the URL carries a signature and the access key's id, never the secret
key. Local images (the embedded mode's paths and ``file://`` URIs) are served by the
page's own route, which reads the path from the item's row, never from the request, and
sends only what is an image by its first bytes.
"""

from __future__ import annotations

import logging

from botocore.exceptions import BotoCoreError, ClientError

from tagger.exceptions import ItemError
from tagger.settings import Settings
from tagger.storage import S3Client, fetch_one, make_s3_client
from tagger.uris import is_s3, parse_uri

log = logging.getLogger(__name__)

# Magic numbers of the formats a catalogue holds (tagger.storage.IMAGE_EXTENSIONS).
_MAGIC = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def make_presign_client(settings: Settings) -> S3Client:
    """The project's S3 client (tagger.storage.make_s3_client's configuration), signing
    with Signature Version 4: botocore presigns with the deprecated version 2 unless told
    otherwise (even against AWS), which buckets created since 2020 refuse."""
    return make_s3_client(settings, signature_version="s3v4")


def is_remote(uri: str) -> bool:
    return is_s3(uri, any_case=True)


def presigned_url(uri: str, *, s3_client: S3Client | None, seconds: int) -> str | None:
    """A presigned GET URL of the ``s3://`` image ``uri``, or None when it cannot be made
    (a URI that does not parse, no credentials): the page then shows no image."""
    if s3_client is None:
        return None
    try:
        parsed = parse_uri(uri)
        return s3_client.generate_presigned_url(
            "get_object",
            Params={"Bucket": parsed.bucket, "Key": parsed.key},
            ExpiresIn=seconds,
        )
    except (ValueError, BotoCoreError, ClientError) as exc:
        # The exception's class only: botocore messages can quote request details.
        log.warning("cannot presign an image URL (%s)", type(exc).__name__)
        return None


def media_type(data: bytes) -> str | None:
    """The image type ``data`` starts with, or None when it is not an image we serve."""
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def read_local(uri: str, *, max_bytes: int) -> tuple[bytes, str] | None:
    """The bytes and media type of the local image ``uri``; None when it is not a local
    file, cannot be read, is larger than ``max_bytes`` or is not an image."""
    if is_remote(uri):
        return None
    try:
        data = fetch_one(uri, s3_client=None, max_bytes=max_bytes)
    except ItemError:
        return None
    kind = media_type(data)
    return (data, kind) if kind else None
