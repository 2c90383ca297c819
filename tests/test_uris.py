"""URIs (tagger.uris): the strict parse for storage, the front doors' checks, and the
urllib reading of artifact folders, trainer images and upload targets. Pure: no S3."""

from __future__ import annotations

from pathlib import Path

import pytest

from tagger.uris import (
    ParsedUri,
    S3Folder,
    as_folder,
    file_url_path,
    is_file_url,
    is_s3,
    local_path,
    looks_like_url,
    parse_uri,
    s3_folder,
    s3_names_object,
    s3_uri,
    url_scheme,
)

# --- parse_uri: image URIs that storage fetches -------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/a/b.jpg", ParsedUri("s3", bucket="bucket", key="a/b.jpg")),
        ("S3://bucket/robe été 1.jpg", ParsedUri("s3", bucket="bucket", key="robe été 1.jpg")),
        ("s3://b.k-1/x%20y.jpg", ParsedUri("s3", bucket="b.k-1", key="x%20y.jpg")),
        ("file:///data/img%20one.png", ParsedUri("file", path=Path("/data/img one.png"))),
        ("file://localhost/data/x.png", ParsedUri("file", path=Path("/data/x.png"))),
        ("/data/x.png", ParsedUri("file", path=Path("/data/x.png"))),
        ("images/x.png", ParsedUri("file", path=Path("images/x.png"))),
        ("./x:1.png", ParsedUri("file", path=Path("./x:1.png"))),
    ],
)
def test_parse_uri_accepts_s3_file_and_plain_paths(uri, expected):
    """s3:// keys are literal, file:// paths are percent-decoded, plain paths pass through."""
    assert parse_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("http://example.com/x.jpg", "unsupported URI scheme 'http'"),
        ("gs://bucket/x.jpg", "unsupported URI scheme 'gs'"),
        ("s3://", "bucket"),
        ("s3://bucket", "no object key"),
        ("s3://bucket/", "no object key"),
        ("s3:///key.jpg", "bucket"),
        ("file://server/share/x.jpg", "remote host"),
        ("file:x.jpg", "file:///absolute/path"),
        ("a\x00b.jpg", "NUL"),
    ],
)
def test_parse_uri_rejects_unusable_uris(uri, words):
    """Unsupported schemes, empty strings and s3 URIs without bucket/key are ValueErrors."""
    with pytest.raises(ValueError, match=words):
        parse_uri(uri)


def test_parse_uri_allows_bucket_only_prefix_when_asked():
    """A listing prefix may be a whole bucket."""
    assert parse_uri("s3://bucket", allow_empty_key=True) == ParsedUri("s3", "bucket", "")
    assert parse_uri("s3://bucket/", allow_empty_key=True).key == ""


def test_parsed_uri_prints_as_the_uri_it_names():
    """An s3 ParsedUri prints as s3://bucket/key, a file one as its path."""
    assert str(parse_uri("S3://b/k/x.jpg")) == "s3://b/k/x.jpg"
    assert str(parse_uri("file:///data/x.png")) == "/data/x.png"
    assert s3_uri("b", "robe été.jpg") == "s3://b/robe été.jpg"


@pytest.mark.parametrize(
    ("prefix", "folder"),
    [("", ""), ("cat/2024", "cat/2024/"), ("cat/2024/", "cat/2024/"), ("/x", "/x/")],
)
def test_as_folder_adds_one_trailing_slash(prefix, folder):
    """A prefix gets a trailing "/" unless it is empty or has one; nothing else changes."""
    assert as_folder(prefix) == folder


# --- the front doors' checks ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "exact", "any_case"),
    [
        ("s3://b/k.jpg", True, True),
        ("S3://b/k.jpg", False, True),
        ("s3:/b/k.jpg", False, False),
        ("/data/s3://x", False, False),
        ("", False, False),
    ],
)
def test_is_s3_is_lower_case_unless_asked(uri, exact, any_case):
    """is_s3 takes only the lower-case s3:// spelling; any_case reads it as parse_uri does."""
    assert is_s3(uri) is exact
    assert is_s3(uri, any_case=True) is any_case


def test_looks_like_url_and_is_file_url():
    """Any "://" makes a URL (even mid-string); is_file_url wants a lower-case file://."""
    assert looks_like_url("gs://b/x.jpg") and looks_like_url("dir/x://y.jpg")
    assert not looks_like_url("file:x.jpg") and not looks_like_url("images/x.jpg")
    assert is_file_url("file:///x.png") and not is_file_url("FILE:///x.png")


@pytest.mark.parametrize(
    ("uri", "names"),
    [
        ("s3://b/a.jpg", True),
        ("s3://b//a.jpg", True),
        ("s3:///a/b.jpg", True),  # no bucket, but that is parse_uri's to refuse
        ("s3://bucket", False),
        ("s3://bucket/", False),
        ("s3://bucket//", False),
        ("s3:///key.jpg", False),
    ],
)
def test_s3_names_object(uri, names):
    """Something after the bucket and a "/" names an object; slashes at the ends do not."""
    assert s3_names_object(uri) is names


# --- read as urllib reads them ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "scheme"),
    [("s3://b/k", "s3"), ("S3://b/k", "s3"), ("/a/b", ""), ("a/b", ""), ("model:v1", "model")],
)
def test_url_scheme_is_what_urllib_finds(uri, scheme):
    """url_scheme needs no "//" after the colon and is lower case."""
    assert url_scheme(uri) == scheme


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("file:///data/img%20one", Path("/data/img one")),
        ("file://server/share/m", Path("/share/m")),  # the host is dropped, not refused
        ("file:relative/m", Path("relative/m")),
        ("/models/m1", None),
        ("s3://b/m1", None),
    ],
)
def test_file_url_path(uri, path):
    """file: URIs give their percent-decoded path; anything else gives None."""
    assert file_url_path(uri) == path


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("/models/m1", Path("/models/m1")),
        ("models/m%201", Path("models/m%201")),  # a plain path is not decoded
        ("~/models/m1", Path("~/models/m1")),  # the caller expands ~
        ("file:///models/m%201", Path("/models/m 1")),
        ("s3://b/m1", None),
        ("model:v1", None),
    ],
)
def test_local_path(uri, path):
    """Plain paths and file: URIs are local; any other scheme is not."""
    assert local_path(uri) == path


@pytest.mark.parametrize(
    ("uri", "folder"),
    [
        ("s3://b/models/m1", S3Folder("b", "models/m1/")),
        ("s3://b/models/m1/", S3Folder("b", "models/m1/")),
        ("S3://b//models//", S3Folder("b", "models/")),
        ("s3://b", S3Folder("b", "")),
        ("s3://b/", S3Folder("b", "")),
        ("s3:///models/m1", None),
        ("gs://b/models", None),
        ("/models/m1", None),
    ],
)
def test_s3_folder(uri, folder):
    """Bucket and a prefix with one trailing "/" (or none for the bucket); None if not s3."""
    assert s3_folder(uri) == folder
