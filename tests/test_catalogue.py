"""Catalogue files: CSV and JSON Lines are parsed and validated before anything is written."""

from __future__ import annotations

import pytest

from tagger.catalogue import read_catalogue
from tagger.exceptions import CatalogueError
from tests.factories import write_csv, write_jsonl


def test_csv_with_title_is_read(tmp_path):
    """A CSV with item_id, image_uri, title yields one item per row, in order."""
    path = write_csv(
        tmp_path / "c.csv",
        [
            {"item_id": "a", "image_uri": "s3://b/a.jpg", "title": "Red dress"},
            {"item_id": "b", "image_uri": "s3://b/b.jpg", "title": ""},
        ],
    )
    items = read_catalogue(path)
    assert [(i.item_id, i.image_uri, i.title) for i in items] == [
        ("a", "s3://b/a.jpg", "Red dress"),
        ("b", "s3://b/b.jpg", None),
    ]


def test_jsonl_caption_is_used_as_title(tmp_path):
    """JSON Lines rows may carry `caption` instead of `title`; numeric ids become strings."""
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"item_id": 7, "image_uri": "s3://b/7.jpg", "caption": "this lady wears a skirt"},
        ],
    )
    (item,) = read_catalogue(path)
    assert item.item_id == "7" and item.title == "this lady wears a skirt"


def test_relative_paths_resolve_against_the_file(tmp_path):
    """A relative image path is taken relative to the catalogue file's folder."""
    (tmp_path / "sub").mkdir()
    path = write_csv(tmp_path / "sub" / "c.csv", [{"item_id": "a", "image_uri": "img/a.jpg"}])
    (item,) = read_catalogue(path)
    assert item.image_uri == str(tmp_path / "sub" / "img" / "a.jpg")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("item_id,title\na,x\n", "line 1: header is missing image_uri"),
        ("item_id,image_uri\na,s3://b/a.jpg\n,s3://b/x.jpg\n", "line 3: item_id is empty"),
        ("item_id,image_uri\na,s3://b/a.jpg\nb,\n", "line 3: image_uri is empty for item 'b'"),
        (
            "item_id,image_uri\na,s3://b/a.jpg\na,s3://b/c.jpg\n",
            "line 3: duplicate item_id 'a' (first on line 2)",
        ),
        ("item_id,image_uri\na,http://x/a.jpg\n", "line 2: image_uri 'http://x/a.jpg'"),
        (
            "item_id,image_uri\na,s3://bucket\n",
            "line 2: image_uri 's3://bucket' of item 'a' has no object key",
        ),
        ("item_id,image_uri\na,s3://b/a.jpg,extra\n", "line 2: 3 fields, header has 2"),
        ("", "empty file"),
        ("item_id,image_uri\n", "no items in file"),
    ],
)
def test_malformed_csv_names_the_line(tmp_path, content, expected):
    """Each kind of malformed CSV is refused with a message naming the bad line."""
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(CatalogueError) as err:
        read_catalogue(path)
    assert expected in str(err.value)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            '{"item_id": "a", "image_uri": "s3://b/a.jpg"}\n{"item_id": "b", \n',
            "line 2: invalid JSON",
        ),
        ('["a", "s3://b/a.jpg"]\n', "line 1: expected a JSON object"),
        ('{"item_id": "a", "image_uri": ["s3://b/a.jpg"]}\n', "line 1: image_uri must be a string"),
    ],
)
def test_malformed_jsonl_names_the_line(tmp_path, content, expected):
    """Broken JSON Lines are refused with the line number."""
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(CatalogueError, match=expected):
        read_catalogue(path)


def test_unknown_extension_and_missing_file_are_refused(tmp_path):
    """Only .csv and .jsonl are read; a missing file says so."""
    (tmp_path / "c.xlsx").write_bytes(b"PK")
    with pytest.raises(CatalogueError, match="unknown catalogue format"):
        read_catalogue(tmp_path / "c.xlsx")
    with pytest.raises(CatalogueError, match="not found"):
        read_catalogue(tmp_path / "nope.csv")


def test_non_utf8_file_is_refused(tmp_path):
    """A file that is not UTF-8 is refused with where the bad byte is."""
    path = tmp_path / "c.csv"
    path.write_bytes(b"item_id,image_uri\n\xff\xfe,s3://b/a.jpg\n")
    with pytest.raises(CatalogueError, match="not UTF-8"):
        read_catalogue(path)


def test_file_is_read_as_a_stream_of_rows(tmp_path):
    """Rows come out one by one as lines are read: the first arrives before a bad last line
    is reached, and the position grows towards the file's size."""
    from tagger.catalogue import CatalogueFile

    lines = ["item_id,image_uri"] + [f"i{k},s3://b/{k}.jpg" for k in range(5_000)] + ["x,"]
    path = tmp_path / "c.csv"
    path.write_text("\n".join(lines) + "\n")
    stream = CatalogueFile(path)
    rows = iter(stream)
    first = next(rows)
    assert (first.line, first.item_id, first.image_uri) == (2, "i0", "s3://b/0.jpg")
    assert 0 < stream.bytes_read < stream.size
    with pytest.raises(CatalogueError, match="line 5002: image_uri is empty for item 'x'"):
        list(rows)


def test_non_utf8_byte_is_reported_by_line_and_file_offset(tmp_path):
    """A bad byte on line 3 is refused naming that line and its offset in the file."""
    path = tmp_path / "c.csv"
    path.write_bytes(b"item_id,image_uri\na,s3://b/a.jpg\nb\xff,s3://b/b.jpg\n")
    with pytest.raises(CatalogueError) as err:
        read_catalogue(path)
    assert str(err.value) == f"{path}:line 3: not UTF-8 text (invalid start byte at byte 34)"


def test_csv_quirks_read_as_before(tmp_path):
    """A byte-order mark, CRLF endings, a quoted multi-line title, a caption column, a short
    row and a blank line read as csv.DictReader read them."""
    path = tmp_path / "c.csv"
    path.write_bytes(
        "\ufeffitem_id,image_uri,caption\r\n"
        'a,s3://b/a.jpg,"two\nlines"\r\n'
        ",,\r\n"
        "b,s3://b/b.jpg\r\n".encode()
    )
    items = read_catalogue(path)
    assert [(i.item_id, i.title) for i in items] == [("a", "two\nlines"), ("b", None)]


def test_nul_character_is_refused_by_its_line(tmp_path):
    """A NUL in a JSON Lines title (Postgres text cannot hold one) names its line."""
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"item_id": "a", "image_uri": "s3://b/a.jpg"},
            {"item_id": "b", "image_uri": "s3://b/b.jpg", "title": "x\u0000y"},
        ],
    )
    with pytest.raises(CatalogueError, match="line 2: a field contains a NUL character"):
        read_catalogue(path)
