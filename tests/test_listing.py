"""Listing: images under an S3 prefix (moto server over HTTP) or a local folder, item ids
from keys, fingerprints that match what the fetcher reports."""

from __future__ import annotations

import pytest

from tagger.exceptions import ConfigError
from tagger.listing import item_id_for, list_images
from tagger.settings import Settings
from tagger.storage import local_fingerprint, make_s3_client, s3_fingerprint


def blob(i: int, n: int = 500) -> bytes:
    return bytes((i * 7 + j) % 256 for j in range(n))


@pytest.fixture
def client(s3_endpoint):
    """A client made the way workers make it, pointed at the moto server."""
    return make_s3_client(Settings(s3_endpoint_url=s3_endpoint, fetch_concurrency=8))


@pytest.mark.parametrize(
    ("key", "prefix", "item_id"),
    [
        ("cat/2024/dresses/123.jpg", "cat/2024/", "dresses/123"),
        ("cat/2024/dresses/123.jpg", "cat/2024", "dresses/123"),
        ("123.JPEG", "", "123"),
        ("p/a.b.c.png", "p/", "a.b.c"),
        ("p/v1.2/noext", "p/", "v1.2/noext"),
        ("/data/imgs/x/1.webp", "/data/imgs", "x/1"),
    ],
)
def test_item_id_for(key, prefix, item_id):
    """Item ids are the key relative to the prefix folder, minus the file extension."""
    assert item_id_for(key, prefix) == item_id


@pytest.mark.parametrize(("key", "prefix"), [("cat/2024-old/1.jpg", "cat/2024"), ("a/", "a/")])
def test_item_id_for_rejects_keys_outside_prefix(key, prefix):
    """A key outside the prefix folder (or the folder itself) has no item id."""
    with pytest.raises(ValueError, match="not under"):
        item_id_for(key, prefix)


def test_list_images_s3_prefix_with_pagination(client, bucket):
    """Images under the prefix folder only, nested, in key order, across several pages."""
    keys = [
        "cat/2024/dresses/1.jpg",
        "cat/2024/dresses/2.JPEG",
        "cat/2024/tops/a/3.png",
        "cat/2024/tops/4.webp",
        "cat/2024/5.jpg",
        "cat/2024/notes.txt",
        "cat/2024/tops/",  # folder marker
        "cat/2024/tops/._4.webp",  # macOS debris
        "cat/2024/.trash/6.jpg",
        "cat/2024-old/7.jpg",  # sibling prefix: not in the folder
        "other/8.jpg",
    ]
    for i, key in enumerate(keys):
        client.put_object(Bucket=bucket, Key=key, Body=blob(i, 100 + i))

    listed = list(list_images(f"s3://{bucket}/cat/2024", s3_client=client, page_size=2))

    assert [x.item_id for x in listed] == ["5", "dresses/1", "dresses/2", "tops/4", "tops/a/3"]
    first = listed[0]
    assert first.uri == f"s3://{bucket}/cat/2024/5.jpg" and first.key == "cat/2024/5.jpg"
    assert first.size == 104 and first.etag and '"' not in first.etag
    head = client.head_object(Bucket=bucket, Key=first.key)
    assert first.fingerprint == s3_fingerprint(head["ETag"], head["ContentLength"])
    whole = list(list_images(f"s3://{bucket}", s3_client=client))
    assert len(whole) == 7  # 5 above + cat/2024-old/7.jpg + other/8.jpg


def test_list_images_missing_bucket_is_config_error(client):
    """Listing a bucket that does not exist says so in one line."""
    with pytest.raises(ConfigError, match="does not exist"):
        list(list_images("s3://no-such-bucket-here/x/", s3_client=client))


def test_list_images_local_directory(tmp_path):
    """A local folder is walked in sorted order, skipping hidden and non-image files."""
    rels = ["b/2.png", "a/1.JPG", "0.webp", "c.webp", "d.gif", "readme.md", ".hidden/9.jpg"]
    rels.append("a/.x.jpg")
    for rel in rels:
        path = tmp_path / "imgs" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"img")
    listed = list(list_images(str(tmp_path / "imgs"), s3_client=None))
    assert [x.item_id for x in listed] == ["0", "a/1", "b/2", "c", "d"]  # S3's key order
    assert listed[1].uri == str((tmp_path / "imgs" / "a" / "1.JPG").resolve())
    st = (tmp_path / "imgs" / "0.webp").stat()
    assert listed[0].fingerprint == local_fingerprint(st.st_mtime_ns, st.st_size)
    with pytest.raises(ConfigError, match="not a directory"):
        list(list_images(str(tmp_path / "missing"), s3_client=None))
