"""Fetching model artifacts (the format itself is ``tagger.artifacts``): a local folder is
used in place; an ``s3://`` prefix is downloaded once into the model cache (atomically, so
concurrent workers on one host never load half an artifact). Registered artifacts must
never be overwritten in place: the URI is the cache key."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from tagger.exceptions import ArtifactError
from tagger.storage import S3Client, iter_objects
from tagger.uris import local_path, s3_folder

_COMPLETE_MARKER = ".complete"


def resolve_artifact(uri: str, *, cache_dir: Path | str, s3_client: S3Client | None = None) -> Path:
    """A local folder for the artifact at ``uri`` (a path, ``file://`` or ``s3://`` URI).

    ``s3_client`` is required for ``s3://`` URIs: the caller passes the configured one
    (``tagger.storage.make_s3_client(settings)``), so the endpoint, retries and timeouts
    of the settings apply here too. S3 artifacts are downloaded once into
    ``cache_dir/<sha256 of uri>/`` and reused: registered versions are immutable, so the
    URI is a sufficient cache key. The folder is filled under a temporary name and
    renamed into place (with a marker file written last), so concurrent workers on one
    host never load a half-downloaded artifact.
    """
    local = local_path(uri)
    if local is not None:
        local = local.expanduser()
        if not local.is_dir():
            raise ArtifactError(f"artifact folder not found: {uri}")
        return local
    folder = s3_folder(uri)
    if folder is None:
        raise ArtifactError(f"unsupported artifact URI {uri!r}: use a path, file:// or s3://")
    if s3_client is None:
        # A bare boto3 client would ignore the configured endpoint and timeouts.
        raise ValueError(
            f"resolving {uri} needs an S3 client: pass tagger.storage.make_s3_client(settings)"
        )

    target = Path(cache_dir) / hashlib.sha256(uri.encode()).hexdigest()[:16]
    if (target / _COMPLETE_MARKER).is_file():
        return target

    bucket, prefix = folder  # prefix ends in "/" (or is ""): model-1 skips model-10/
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        count = 0
        for obj in iter_objects(s3_client, bucket=bucket, prefix=prefix):
            rel = obj["Key"][len(prefix) :]
            if not rel or rel.endswith("/"):
                continue  # "folder" placeholder objects
            if ".." in rel.split("/"):
                raise ArtifactError(f"refusing unsafe object key {obj['Key']!r}")
            dest = staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            s3_client.download_file(bucket, obj["Key"], str(dest))
            count += 1
        if count == 0:
            raise ArtifactError(f"no artifact files under {uri}")
        (staging / _COMPLETE_MARKER).write_text(uri + "\n", encoding="utf-8")
        if target.exists() and not (target / _COMPLETE_MARKER).is_file():
            shutil.rmtree(target, ignore_errors=True)  # left by a copy made by hand
        try:
            os.rename(staging, target)
        except OSError:
            # Another process finished the same download first; use its copy.
            if not (target / _COMPLETE_MARKER).is_file():
                raise
    except (BotoCoreError, ClientError) as e:
        raise ArtifactError(f"cannot download artifact {uri}: {e}") from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
