"""Streaming imports: catalogue files staged in chunks (COPY on Postgres, executemany on
SQLite), checked whole, then applied with set-based SQL in one transaction."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from tagger.db import Item, Job, JobBatch
from tagger.exceptions import CatalogueError
from tagger.importer import import_catalogue
from tagger.ledger import pending_ids
from tagger.scoring import Prediction
from tagger.sources import FileSource, open_source
from tagger.tags import save_batch
from tests.factories import add_model_version, jpeg_bytes

PRED = Prediction("WOMEN", 0.9, "Dresses", 0.8, {"gender": {}, "product": {}})


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Stage 1,000 rows per chunk, so a 20,000-line file crosses many chunk boundaries."""
    monkeypatch.setattr("tagger.importer.CHUNK_ROWS", 1_000)


def _csv(path: Path, n: int, *, bad: dict[int, str] | None = None) -> Path:
    """An n-item CSV (item k on line k + 2); ``bad`` replaces whole lines by number."""
    lines = ["item_id,image_uri,title"]
    lines += [f"i{k:05d},s3://b/{k}.jpg,title {k}" for k in range(n)]
    for number, text in (bad or {}).items():
        lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")
    return path


def _counts(session) -> tuple[int, int, int]:
    items, jobs = (session.scalar(sa.select(sa.func.count()).select_from(t)) for t in (Item, Job))
    # The jobs' members: the ids in their batches.
    members = sum(len(ids) for ids in session.scalars(sa.select(JobBatch.item_ids)))
    return items, jobs, members


def test_malformed_line_near_the_end_refuses_the_whole_file(session_factory, tmp_path):
    """A bad line 19,990 of 20,001 refuses the file by that line; nothing is written."""
    path = _csv(tmp_path / "c.csv", 20_000, bad={19_990: "i19988,,oops"})
    with session_factory.begin() as s:
        add_model_version(s, "v1", activate=True)
    with pytest.raises(CatalogueError) as err, session_factory.begin() as s:
        import_catalogue(session=s, source=FileSource(path), batch_size=64)
    assert str(err.value) == f"{path}:line 19990: image_uri is empty for item 'i19988'"
    with session_factory() as s:
        assert _counts(s) == (0, 0, 0)


def test_duplicate_ids_across_chunks_are_refused_with_both_lines(session_factory, tmp_path):
    """An id on line 3 and again on line 15,000 (chunks of 1,000 apart) names both lines."""
    path = _csv(tmp_path / "c.csv", 20_000, bad={15_000: "i00001,s3://b/again.jpg,x"})
    with session_factory.begin() as s:
        add_model_version(s, "v1", activate=True)
    with pytest.raises(CatalogueError) as err, session_factory.begin() as s:
        import_catalogue(session=s, source=FileSource(path), batch_size=64)
    assert str(err.value) == f"{path}:line 15000: duplicate item_id 'i00001' (first on line 3)"
    with session_factory() as s:
        assert _counts(s) == (0, 0, 0)


def test_duplicate_before_a_malformed_line_is_the_error_reported(session_factory, tmp_path):
    """As reading top to bottom would: an id repeated on line 5,000 beats a bad line 9,000."""
    bad = {5_000: "i00010,s3://b/x.jpg,x", 9_000: "i08998,http://x/a.jpg,x"}
    path = _csv(tmp_path / "c.csv", 10_000, bad=bad)
    with session_factory.begin() as s:
        add_model_version(s, "v1", activate=True)
    expected = "line 5000: duplicate item_id 'i00010'"
    with pytest.raises(CatalogueError, match=expected), session_factory.begin() as s:
        import_catalogue(session=s, source=FileSource(path), batch_size=64)


def test_new_changed_unchanged_counts_and_what_is_tagged(session_factory, tmp_path):
    """Second import: a new item, a moved image, a new title, an untagged item and
    untouched ones are counted right; the ledger holds only new, moved and untagged."""
    first = [f"i{k},s3://b/{k}.jpg,t{k}" for k in range(6)]
    path = tmp_path / "c.csv"
    path.write_text("item_id,image_uri,title\n" + "\n".join(first) + "\n")
    with session_factory.begin() as s:
        add_model_version(s, "v1", activate=True)
        job = import_catalogue(session=s, source=FileSource(path), batch_size=4).job
        tagged = {f"i{k}": PRED for k in range(6) if k != 4}  # i4 never got a tag
        save_batch(session=s, job_id=job.id, model_version="v1", predictions=tagged, failures={})
    second = list(first)
    second[1] = "i1,s3://b/moved.jpg,t1"  # image changed: re-tag
    second[2] = "i2,s3://b/2.jpg,a new title"  # title only: saved, not re-tagged
    second.append("i9,s3://b/9.jpg,")  # new
    path.write_text("item_id,image_uri,title\n" + "\n".join(second) + "\n")
    with session_factory.begin() as s:
        done = import_catalogue(session=s, source=FileSource(path), batch_size=4)
    assert (done.items, done.new, done.changed, done.unchanged) == (7, 1, 2, 4)
    assert (done.job.total, done.job.skipped) == (3, 4)
    with session_factory() as s:
        ledger = pending_ids(session=s, job_id=done.job.id)
        assert sorted(ledger) == ["i1", "i4", "i9"]
        assert s.get(Item, "i1").image_uri == "s3://b/moved.jpg"
        assert (s.get(Item, "i2").title, s.get(Item, "i9").title) == ("a new title", None)


def test_folder_images_mapping_to_one_id_are_refused(session_factory, tmp_path, settings_env):
    """A folder with a.jpg and a.png: both images are named, as the listing found them."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("a.jpg", "a.png", "b.jpg"):
        (folder / name).write_bytes(jpeg_bytes())
    with session_factory.begin() as s:
        add_model_version(s, "v1", activate=True)
    source = open_source(settings_env, file=folder)
    with pytest.raises(CatalogueError) as err, session_factory.begin() as s:
        import_catalogue(session=s, source=source, batch_size=4)
    assert str(err.value) == (
        f"{folder.resolve() / 'a.png'} and {folder.resolve() / 'a.jpg'} map to the same item id 'a'"
    )


def test_folder_fingerprint_change_is_queued_again(session_factory, tmp_path, settings_env):
    """An image rewritten in place (new size) under a folder is re-tagged; others are not."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(3):
        (folder / f"{k}.jpg").write_bytes(jpeg_bytes(seed=k))
    with session_factory.begin() as s:
        add_model_version(s, "v1", activate=True)
        job = import_catalogue(
            session=s, source=open_source(settings_env, file=folder), batch_size=4
        ).job
        every = {str(k): PRED for k in range(3)}
        save_batch(session=s, job_id=job.id, model_version="v1", predictions=every, failures={})
    (folder / "1.jpg").write_bytes(jpeg_bytes(seed=9, size=(60, 70)))
    with session_factory.begin() as s:
        done = import_catalogue(
            session=s, source=open_source(settings_env, file=folder), batch_size=4
        )
        ledger = pending_ids(session=s, job_id=done.job.id)
        assert (list(ledger), done.changed, done.unchanged) == (["1"], 1, 2)


def test_sqlite_import_stages_and_applies_the_same_way(tmp_path):
    """On SQLite (the embedded mode) the same file imports, re-imports and refuses alike."""
    from tagger.db import make_engine, make_session_factory, upgrade

    url = f"sqlite:///{tmp_path / 'tagger.db'}"
    upgrade(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    path = _csv(tmp_path / "c.csv", 2_500)
    with sessions.begin() as s:
        add_model_version(s, "v1", activate=True)
        first = import_catalogue(session=s, source=FileSource(path), batch_size=64)
    assert (first.items, first.new, first.job.total) == (2_500, 2_500, 2_500)
    with sessions.begin() as s:
        again = import_catalogue(session=s, source=FileSource(path), batch_size=64)
    # Not tagged yet: every item is queued again, none is new or changed.
    assert (again.new, again.changed, again.unchanged, again.job.total) == (0, 0, 2_500, 2_500)
    bad = _csv(tmp_path / "bad.csv", 2_500, bad={2_000: "i00003,s3://b/x.jpg,x"})
    expected = "line 2000: duplicate item_id 'i00003'"
    with pytest.raises(CatalogueError, match=expected), sessions.begin() as s:
        import_catalogue(session=s, source=FileSource(bad), batch_size=64)
    with sessions() as s:
        assert _counts(s) == (2_500, 2, 5_000)
        job = s.get(Job, first.job.id)
        assert job.created_at is not None and job.status == "queued"
    engine.dispose()


def test_fields_with_tabs_backslashes_and_line_breaks_are_stored_as_written(
    session_factory, tmp_path
):
    """Tabs, backslashes, CR and a quoted newline in a row reach items unchanged (COPY text)."""
    path = tmp_path / "c.csv"
    path.write_bytes(
        b"item_id,image_uri,title\n"
        b'a\\1,s3://b/a\\x.jpg,"tab\there"\n'
        b'b2,s3://b/b.jpg,"two\nli\rnes"\n'
        b"c3,s3://b/c.jpg,\\N\n"
        b"d4,s3://b/d.jpg,\n"
    )
    with session_factory.begin() as s:
        add_model_version(s, "v1", activate=True)
    with session_factory.begin() as s:
        import_catalogue(session=s, source=FileSource(path), batch_size=64)
    with session_factory() as s:
        rows = s.execute(sa.select(Item.item_id, Item.image_uri, Item.title).order_by(Item.item_id))
        assert [tuple(r) for r in rows] == [
            ("a\\1", "s3://b/a\\x.jpg", "tab\there"),
            ("b2", "s3://b/b.jpg", "two\nli\rnes"),
            ("c3", "s3://b/c.jpg", "\\N"),
            ("d4", "s3://b/d.jpg", None),
        ]


def test_two_imports_of_the_same_new_items_at_once_both_succeed(session_factory, tmp_path):
    """Imports take turns from planning to commit (an advisory lock), so new items inserted
    without ON CONFLICT never collide: both commit, each item is stored once."""
    with session_factory.begin() as s:
        add_model_version(s, "v1", activate=True)
    paths = [_csv(tmp_path / f"{n}.csv", 3_000) for n in (1, 2)]
    started, errors, jobs = threading.Barrier(2), [], []

    def run(path: Path) -> None:
        try:
            with session_factory.begin() as s:
                started.wait(timeout=30)
                jobs.append(import_catalogue(session=s, source=FileSource(path), batch_size=64))
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert sorted((d.new, d.unchanged) for d in jobs) == [(0, 3_000), (3_000, 0)]
    with session_factory() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Item)) == 3_000
