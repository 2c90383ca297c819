"""Where a catalogue comes from: a CSV/JSON Lines file, a local image folder, or every
image under an S3 prefix. All are read completely before anything is written."""

from __future__ import annotations

from pathlib import Path

from tagger.catalogue import CatalogueItem, read_catalogue
from tagger.exceptions import CatalogueError
from tagger.settings import Settings
from tagger.uris import is_s3


def load_items(
    settings: Settings, *, file: Path | None = None, s3_prefix: str | None = None
) -> tuple[list[CatalogueItem], str]:
    """The items to import and a label for the job's ``source``."""
    from tagger.listing import list_images
    from tagger.storage import make_s3_client

    if s3_prefix is not None:
        if not is_s3(s3_prefix):
            raise CatalogueError(f"--s3-prefix must start with s3://, got {s3_prefix!r}")
        listed = list_images(s3_prefix, s3_client=make_s3_client(settings))
        source = s3_prefix
    elif file is not None and file.is_dir():
        listed = list_images(str(file.resolve()), s3_client=None)
        source = str(file)
    elif file is not None:
        return read_catalogue(file), str(file)
    else:
        raise CatalogueError("no catalogue given")
    items = [
        CatalogueItem(item_id=image.item_id, image_uri=image.uri, fingerprint=image.fingerprint)
        for image in listed
    ]
    if not items:
        raise CatalogueError(f"no images (.jpg, .jpeg, .png, .webp) found under {source}")
    ids: dict[str, str] = {}
    for item in items:
        if item.item_id in ids:
            raise CatalogueError(
                f"{item.image_uri} and {ids[item.item_id]} map to the same item id {item.item_id!r}"
            )
        ids[item.item_id] = item.image_uri
    return items, source
