"""Listing images under an S3 prefix or in a local folder (`tagger import --s3-prefix`,
`tagger import FOLDER`), with item ids derived from the keys."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from tagger.exceptions import ConfigError
from tagger.storage import (
    IMAGE_EXTENSIONS,
    S3Client,
    error_code,
    iter_objects,
    local_fingerprint,
    s3_fingerprint,
    storage_error,
)
from tagger.uris import as_folder, parse_uri, s3_uri


@dataclass(frozen=True)
class ListedImage:
    uri: str  # s3://bucket/key, or an absolute local path
    key: str  # the object key, or the local path in POSIX form
    item_id: str  # key relative to the listed prefix, without extension
    size: int
    etag: str | None = None  # s3 only, without quotes
    mtime_ns: int | None = None  # local only

    @property
    def fingerprint(self) -> str:
        """What tagger stores as the image's fingerprint: a change means a new image."""
        if self.etag is not None:
            return s3_fingerprint(self.etag, self.size)
        return local_fingerprint(self.mtime_ns or 0, self.size)


def list_images(
    prefix_uri: str,
    *,
    s3_client: S3Client | None,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    page_size: int | None = None,
) -> Iterator[ListedImage]:
    """Every image under an ``s3://bucket/prefix/`` or a local directory, in key order.

    The prefix is a folder: ``s3://b/cat/2024`` means ``s3://b/cat/2024/``. Folder marker
    keys, other extensions (case-insensitive) and hidden files (any path part starting
    with ".", e.g. macOS ``._x.jpg`` debris) are skipped. ConfigError for a missing bucket
    or directory, StorageError when S3 fails mid-listing.
    """
    exts = tuple(e.lower() for e in extensions)
    parsed = parse_uri(prefix_uri, allow_empty_key=True)
    if parsed.scheme == "file":
        assert parsed.path is not None
        yield from _list_local(parsed.path, exts)
        return
    if s3_client is None:
        raise ConfigError("listing s3:// needs an S3 client (see make_s3_client)")
    assert parsed.bucket is not None  # parse_uri always names a bucket for s3
    bucket = parsed.bucket
    prefix = as_folder(parsed.key or "")
    try:
        for obj in iter_objects(s3_client, bucket=bucket, prefix=prefix, page_size=page_size):
            key = obj["Key"]
            rel = key[len(prefix) :]
            if _wanted(rel, exts):
                yield ListedImage(
                    uri=s3_uri(bucket, key),
                    key=key,
                    item_id=item_id_for(key, prefix),
                    size=obj["Size"],
                    etag=obj["ETag"].strip('"'),
                )
    except ClientError as e:
        if error_code(e) == "NoSuchBucket":
            raise ConfigError(f"S3 bucket {parsed.bucket!r} does not exist") from None
        raise storage_error(e, parsed) from None
    except BotoCoreError as e:
        raise storage_error(e, parsed) from None


def item_id_for(key_or_path: str, prefix: str) -> str:
    """Item id from a key relative to a folder prefix, without extension.

    ``item_id_for("cat/2024/dresses/123.jpg", "cat/2024/") == "dresses/123"``; a prefix
    without a trailing "/" is the same folder. ValueError if the key is not under it.
    """
    base = as_folder(prefix)
    if not key_or_path.startswith(base) or len(key_or_path) == len(base):
        raise ValueError(f"{key_or_path!r} is not under {prefix!r}")
    rel = key_or_path[len(base) :]
    stem, dot, ext = rel.rpartition(".")
    # only strip a real extension: not "dir.v2/file" nor a dot-file's leading dot
    if dot and "/" not in ext and stem and not stem.endswith("/"):
        return stem
    return rel


# --- helpers ---------------------------------------------------------------------------


def _list_local(root: Path, exts: tuple[str, ...]) -> Iterator[ListedImage]:
    if not root.is_dir():
        raise ConfigError(f"not a directory: {root}")
    root = root.resolve()
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [Path(dirpath, name) for name in filenames if _wanted(name, exts)]
    # one global sort by POSIX path gives the same order S3 lists keys in
    base = root.as_posix()
    for path in sorted(found, key=lambda p: p.as_posix()):
        try:
            st = path.stat()
        except OSError:  # vanished, or a dangling link: nothing to tag
            continue
        key = path.as_posix()
        yield ListedImage(
            uri=str(path),
            key=key,
            item_id=item_id_for(key, base),
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
        )


def _wanted(rel: str, exts: tuple[str, ...]) -> bool:
    if not rel or rel.endswith("/"):
        return False
    if any(part.startswith(".") for part in rel.split("/")):
        return False
    return rel.lower().endswith(exts)
