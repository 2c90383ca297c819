"""Image and artifact URIs: every rule about how tagger reads them. Pure (stdlib only), so
the catalogue reader and the trainer can use it without boto3.

URIs are ``s3://bucket/key`` (keys are taken literally, not percent-decoded, like the AWS
CLI does), ``file:///abs/path`` (percent-decoded, as ``Path.as_uri()`` writes them) or a
plain local path, absolute or relative to the working directory.

Three readings live here side by side, each kept for the callers that rely on it:

* the strict one, :func:`parse_uri`, for image URIs that storage fetches or lists: a
  scheme is ``name://`` at the start, in any case, and bucket names are checked;
* the looser checks the front doors (catalogue rows, ``--s3-prefix``, ``model register``)
  and the trainer apply before anything is fetched: lower-case ``s3://`` only, and any
  ``://`` makes a string a URL rather than a relative path;
* urllib's, for artifact folders, trainer images and upload targets: ``name:`` is a
  scheme in any case, and a ``file:`` host is ignored (:func:`url_scheme`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple
from urllib.parse import unquote, urlsplit

S3_PREFIX = "s3://"
FILE_PREFIX = "file://"

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# --- the strict reading: image URIs that storage fetches -------------------------------


@dataclass(frozen=True)
class ParsedUri:
    scheme: Literal["s3", "file"]
    bucket: str | None = None  # s3 only
    key: str | None = None  # s3 only
    path: Path | None = None  # file only

    def __str__(self) -> str:
        # str() keeps a hand-built ParsedUri without bucket printable, as it always was
        return s3_uri(str(self.bucket), str(self.key)) if self.scheme == "s3" else str(self.path)


def parse_uri(uri: str, *, allow_empty_key: bool = False) -> ParsedUri:
    """Parse an image URI or path; ValueError with a clear message when unusable.

    ``allow_empty_key`` accepts ``s3://bucket`` / ``s3://bucket/`` (a listing prefix).
    """
    if not uri or not uri.strip():
        raise ValueError("empty image URI")
    if "\x00" in uri:
        raise ValueError(f"image URI contains a NUL byte: {uri!r}")
    m = _SCHEME.match(uri)
    if m is None:
        if uri.startswith("file:"):
            raise ValueError(f"file URIs must be file:///absolute/path, got {uri!r}")
        return ParsedUri("file", path=Path(uri))
    scheme = m.group(1).lower()
    if scheme == "s3":
        bucket, _, key = uri[m.end() :].partition("/")
        if not bucket or not _BUCKET.match(bucket):
            raise ValueError(f"bad S3 bucket name in {uri!r}; expected s3://bucket/key")
        if not key and not allow_empty_key:
            raise ValueError(f"S3 URI has no object key: {uri!r}; expected s3://bucket/key")
        return ParsedUri("s3", bucket=bucket, key=key)
    if scheme == "file":
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file URI names a remote host {parts.netloc!r}: {uri!r}")
        if not parts.path.startswith("/"):
            raise ValueError(f"file URIs must be file:///absolute/path, got {uri!r}")
        return ParsedUri("file", path=Path(unquote(parts.path)))
    raise ValueError(
        f"unsupported URI scheme {scheme!r} in {uri!r}; use s3://bucket/key or a local path"
    )


def s3_uri(bucket: str, key: str) -> str:
    """The ``s3://bucket/key`` URI of an object (the key as it is, not percent-encoded)."""
    return f"{S3_PREFIX}{bucket}/{key}"


def as_folder(prefix: str) -> str:
    """``prefix`` ending in one "/" (unless empty), so ``cat/2024`` lists ``cat/2024/...``
    and never ``cat/20240/...``. Nothing else about it changes."""
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


# --- the front doors' checks -------------------------------------------------------------


def is_s3(uri: str, *, any_case: bool = False) -> bool:
    """True for an ``s3://`` URI.

    The front doors (catalogue rows, ``--s3-prefix``, ``model register``) and the worker's
    artifact check take only the lower-case spelling that every message shows;
    ``any_case=True`` reads the scheme case-insensitively, as :func:`parse_uri` does.
    """
    head = uri[: len(S3_PREFIX)]
    return (head.lower() if any_case else head) == S3_PREFIX


def is_file_url(uri: str) -> bool:
    """True for a URI written ``file://...`` (lower case)."""
    return uri.startswith(FILE_PREFIX)


def looks_like_url(uri: str) -> bool:
    """True when ``uri`` contains ``://`` anywhere: the catalogue and the trainer never read
    such a string as a relative path, even where :func:`parse_uri` would."""
    return "://" in uri


def s3_names_object(uri: str) -> bool:
    """For an ``s3://`` URI: something follows the bucket after a "/" (slashes at either
    end ignored). A cheap check on catalogue rows; the bucket name itself is checked by
    :func:`parse_uri` when the image is fetched."""
    return "/" in uri[len(S3_PREFIX) :].strip("/")


# --- read as urllib reads them: artifact folders, trainer images, upload targets --------


class S3Folder(NamedTuple):
    bucket: str
    prefix: str  # no leading "/", one trailing "/", or "" for the whole bucket


def url_scheme(uri: str) -> str:
    """The scheme ``urllib`` finds (lower case, "" for a plain path). Unlike
    :func:`parse_uri` it needs no ``//``: ``name:rest`` has the scheme ``name``."""
    return urlsplit(uri).scheme


def file_url_path(uri: str) -> Path | None:
    """The path of a ``file:`` URI (percent-decoded; a host, query or fragment is dropped,
    not refused as :func:`parse_uri` would); None for anything else."""
    parts = urlsplit(uri)
    return Path(unquote(parts.path)) if parts.scheme == "file" else None


def local_path(uri: str) -> Path | None:
    """The local path that a plain path or a ``file:`` URI names (see
    :func:`file_url_path`); None for any other scheme. ``~`` is left for the caller."""
    path = file_url_path(uri)
    if path is None and url_scheme(uri) == "":
        path = Path(uri)
    return path


def s3_folder(uri: str) -> S3Folder | None:
    """Bucket and folder prefix of ``s3://bucket/some/folder``; None unless the scheme is
    s3 (any case) with a bucket. Slashes around the folder are dropped and one is put
    back at the end, so ``s3://b/model-1`` never also matches ``s3://b/model-10/...``."""
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        return None
    return S3Folder(parts.netloc, as_folder(parts.path.strip("/")))
