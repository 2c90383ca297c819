"""Where a catalogue comes from: a CSV/JSON Lines file, a local image folder, or every
image under an S3 prefix. All are read completely before anything is written."""

from __future__ import annotations

from pathlib import Path

from tagger.catalogue import CatalogueItem, read_catalogue
from tagger.exceptions import CatalogueError
from tagger.settings import Settings


def load_items(
    settings: Settings, *, file: Path | None = None, s3_prefix: str | None = None
) -> tuple[list[CatalogueItem], str]:
    """The items to import and a label for the job's ``source``."""
    from tagger.storage import item_id_for, list_images, make_s3_client

    if s3_prefix is not None:
        if not s3_prefix.startswith("s3://"):
            raise CatalogueError(f"--s3-prefix must start with s3://, got {s3_prefix!r}")
        bucket_prefix = s3_prefix[len("s3://") :].split("/", 1)
        prefix = bucket_prefix[1] if len(bucket_prefix) > 1 else ""
        listed = list(list_images(s3_prefix, s3_client=make_s3_client(settings)))
        items = [
            CatalogueItem(
                item_id=item_id_for(image.key, prefix),
                image_uri=image.uri,
                fingerprint=f"{image.etag}:{image.size}" if image.etag else None,
            )
            for image in listed
        ]
        source = s3_prefix
    elif file is not None and file.is_dir():
        listed = list(list_images(str(file.resolve()), s3_client=None))
        root = str(file.resolve()).rstrip("/") + "/"
        items = [
            CatalogueItem(
                item_id=item_id_for(image.key, root),
                image_uri=image.uri,
                fingerprint=f"{image.etag}:{image.size}" if image.etag else None,
            )
            for image in listed
        ]
        source = str(file)
    elif file is not None:
        return read_catalogue(file), str(file)
    else:
        raise CatalogueError("no catalogue given")
    if not items:
        raise CatalogueError(f"no images (.jpg, .jpeg, .png, .webp) found under {source}")
    ids: dict[str, str] = {}
    for item in items:
        if item.item_id in ids:
            raise CatalogueError(
                f"{item.image_uri} and {ids[item.item_id]} map to the same item id "
                f"{item.item_id!r}"
            )
        ids[item.item_id] = item.image_uri
    return items, source
