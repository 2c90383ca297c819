"""`tagger web`: the review page over HTTP (Starlette's TestClient on the real app, real
Postgres): the review queue and filters page by keyset in the right order, the item page
shows every probability, corrections need a login and a CSRF token and are audited,
images come from presigned S3 URLs or, locally, only for items that exist, and filter
values that look like SQL are refused as values, never run."""

from __future__ import annotations

import html
import re
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from starlette.testclient import TestClient

from tagger.db import Item, Job, Label, LabelChange, current_tags
from tagger.labels import set_label
from tagger.ledger import add_batches
from tagger.registry import register_model_version
from tagger.settings import Settings
from tagger.tags import save_batch
from tagger.web import auth
from tagger.web.app import create_app
from tagger.web.queries import CursorError, Filters, grid_page
from tests.factories import (
    GENDERS,
    PRODUCTS,
    add_review_thresholds,
    jpeg_bytes,
    scored_prediction,
)

# item: (gender, product type, product score, margin, gender score). v1 is active, with
# review thresholds of 0.3 (product margin) and 0.6 (gender score) for every class.
TAGS = {
    "a01": ("WOMEN", "Dresses", 0.55, 0.05, 0.9),
    "a02": ("WOMEN", "Dresses", 0.60, 0.05, 0.9),  # the same margin as a01: id order
    "a03": ("MEN", "Pants", 0.70, 0.10, 0.9),
    "a04": ("WOMEN", "Dresses", 0.90, 0.80, 0.9),  # confident: not in the queue
    "a05": ("MEN", "Shorts", 0.50, 0.20, 0.9),
    "a06": ("WOMEN", "Tees_Tanks", 0.95, 0.90, 0.55),  # a confident type, an unsure gender
    "a07": ("MEN", "Pants", 0.80, None, 0.55),  # no margin stored: after every margin
    "a08": ("MEN", "Pants", 0.80, None, 0.90),
    "a09": ("WOMEN", "Dresses", 0.40, 0.01, 0.9),  # the closest call
    "a11": ("WOMEN", "Shorts", 0.45, None, 0.50),
}
QUEUE = ["a09", "a01", "a02", "a03", "a05", "a06", "a07", "a11"]
SECRET = "a-session-key-for-tests-only"
PASSWORD = "correct horse battery"


def _seed(session_factory, folder: Path) -> int:
    """The items of TAGS as local JPEGs tagged by the active v1, and a10 by v0 only (active
    before v1); returns the id of a job of a01, a03 and a04."""
    folder.mkdir()
    with session_factory.begin() as s:
        for n, item_id in enumerate([*TAGS, "a10"]):
            path = folder / f"{item_id}.jpg"
            path.write_bytes(jpeg_bytes(seed=n))
            s.add(Item(item_id=item_id, image_uri=str(path), title=f"item {item_id}"))
        s.flush()
        for version in ("v0", "v1"):
            register_model_version(
                session=s,
                version=version,
                artifact_uri=f"/models/{version}",
                gender_labels=GENDERS,
                product_labels=PRODUCTS,
                image_size=32,
                uses_text=False,
                activate=True,
            )
            if version == "v0":
                v0 = {"a10": scored_prediction("MEN", "Dresses", product_score=0.5, margin=0.01)}
                save_batch(session=s, job_id=None, model_version="v0", predictions=v0, failures={})
        add_review_thresholds(s, "v1", product_margin=0.3, gender_score=0.6)
        preds = {
            i: scored_prediction(g, p, product_score=ps, margin=m, gender_score=gs)
            for i, (g, p, ps, m, gs) in TAGS.items()
        }
        save_batch(session=s, job_id=None, model_version="v1", predictions=preds, failures={})
        job = Job(kind="import", source="test", batch_size=2)
        s.add(job)
        s.flush()
        add_batches(session=s, job_id=job.id, item_ids=["a01", "a03", "a04"], batch_size=2)
        return job.id


@pytest.fixture
def catalogue(session_factory, tmp_path):
    """_seed's catalogue on Postgres: (session factory, job id)."""
    return session_factory, _seed(session_factory, tmp_path / "images")


@pytest.fixture
def users_file(tmp_path) -> Path:
    path = tmp_path / "users"
    # Few iterations: a login per test, not 0.3 s of hashing each.
    auth.add_user(path, "ana", PASSWORD, iterations=1000)
    return path


@pytest.fixture
def client(catalogue, pg_url, redis_url, users_file):
    settings = Settings(
        database_url=pg_url, broker_url=redis_url, web_users_file=users_file, web_secret=SECRET
    )
    with TestClient(create_app(settings)) as c:
        yield c


def _items(page: str) -> list[str]:
    return [html.unescape(i) for i in re.findall(r'data-item="([^"]*)"', page)]


def _csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def _log_in(client: TestClient, name: str = "ana", password: str = PASSWORD):
    token = _csrf(client.get("/login").text)
    return client.post("/login", data={"name": name, "password": password, "csrf": token})


def _walk(session_factory, filters: Filters, limit: int) -> list[str]:
    seen, after = [], None
    with session_factory() as s:
        while True:
            page = grid_page(session=s, filters=filters, after=after, limit=limit)
            assert len(page.rows) <= limit
            seen += [r["item_id"] for r in page.rows]
            if page.next_after is None:
                return seen
            after = page.next_after


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 8, 48])
def test_review_queue_pages_lowest_margin_first_whatever_the_page_size(catalogue, limit):
    """Keyset pages of the queue add up to needs_review rows by (margin, item id), the rows
    without a margin last, none twice, none missed, at every page size."""
    assert _walk(catalogue[0], Filters(), limit) == QUEUE


@pytest.mark.parametrize(
    "filters, expected",
    [
        (Filters(product_type="Dresses"), ["a09", "a01", "a02"]),
        (Filters(gender="MEN"), ["a03", "a05", "a07"]),
        (Filters(min_score=0.5, max_score=0.7), ["a01", "a02", "a03", "a05"]),
        (Filters(needs_review=False, sort="item", model_version="v0"), ["a10"]),
        (Filters(needs_review=False, sort="item"), sorted([*TAGS, "a10"])),
        (Filters(needs_review=False, product_type="Pants"), ["a03", "a07", "a08"]),
    ],
)
def test_filters_pick_the_right_rows_in_order(catalogue, filters, expected):
    """Gender, product type, score range and version filters, in the queue and out of it."""
    assert _walk(catalogue[0], filters, 2) == expected


def test_job_and_source_filters(catalogue):
    """A job's members (its batches), and human-labelled rows against the model's."""
    sessions, job_id = catalogue
    with sessions.begin() as s:
        set_label(session=s, item_id="a03", by="ana", product_type="Shorts")
    in_job = Filters(needs_review=False, job_id=job_id, sort="item")
    assert _walk(sessions, in_job, 2) == ["a01", "a03", "a04"]
    human = Filters(needs_review=False, source="human")
    assert _walk(sessions, human, 2) == ["a03"]
    model = Filters(source="model")
    assert "a03" not in _walk(sessions, model, 3)


def test_the_queue_and_filters_page_alike_on_postgres_and_sqlite(sessions, tmp_path):
    """The embedded mode's SQLite pages the queue, a job and the labelled rows as
    Postgres does (booleans, NULL margins, JSON id arrays)."""
    job_id = _seed(sessions, tmp_path / "images")
    with sessions.begin() as s:
        set_label(session=s, item_id="a05", by="ana", product_type="Pants")
    assert _walk(sessions, Filters(), 3) == [i for i in QUEUE if i != "a05"]
    assert _walk(sessions, Filters(needs_review=False, job_id=job_id), 1) == ["a01", "a03", "a04"]
    assert _walk(sessions, Filters(needs_review=False, source="human", sort="item"), 2) == ["a05"]


def test_a_damaged_cursor_is_refused(catalogue):
    """A cursor this module did not write raises CursorError, never reaches SQL."""
    with catalogue[0]() as s, pytest.raises(CursorError):
        grid_page(session=s, filters=Filters(), after="bm90IGEgY3Vyc29y")


def test_the_page_shows_the_queue_and_follows_next_links(client):
    """The default page is the review queue; its Next links walk it in order."""
    seen, url = [], "/"
    while url:
        page = client.get(url)
        assert page.status_code == 200
        seen += _items(page.text)
        found = re.search(r'rel="next" href="([^"]+)"', page.text)
        url = html.unescape(found.group(1)) if found else None
    assert seen == QUEUE
    assert "8 items need review" in client.get("/").text


def test_filters_over_http(client):
    """Low-confidence dresses: the queue filtered by product type."""
    page = client.get("/", params={"product_type": "Dresses", "max_score": "0.58"})
    assert page.status_code == 200 and _items(page.text) == ["a09", "a01"]


@pytest.mark.parametrize(
    "params",
    [
        {"product_type": "Dresses' OR '1'='1"},
        {"gender": "WOMEN'; DROP TABLE items; --"},
        {"version": "v1' UNION SELECT * FROM labels --"},
        {"sort": "item_id; DROP TABLE items"},
        {"source": "human OR 1=1"},
        {"job": "1 OR 1=1"},
        {"min_score": "0 OR 1=1"},
        {"max_score": "nan"},
    ],
)
def test_sql_looking_filter_values_are_refused_as_values(client, catalogue, params):
    """Each is a value no filter knows: a 400 naming it, no rows, every table intact."""
    page = client.get("/", params=params)
    assert page.status_code == 400 and _items(page.text) == []
    assert 'role="alert"' in page.text
    with catalogue[0]() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Item)) == 11


def test_a_damaged_page_link_says_so(client):
    """A cursor the page did not write is a 400 with a message, not an error page."""
    page = client.get("/", params={"after": "'; DROP TABLE items; --"})
    assert page.status_code == 400 and "page link is damaged" in page.text


def test_item_page_shows_every_class_probability_and_the_history(client):
    """Every gender and product type score of the item, the tag shown and its source."""
    page = client.get("/item", params={"id": "a01"})
    assert page.status_code == 200
    scores = scored_prediction("WOMEN", "Dresses", product_score=0.55, margin=0.05).scores
    for head in ("gender", "product"):
        for label, p in scores[head].items():
            assert f">{label}</text>" in page.text and f">{p:.3f}</text>" in page.text
    assert "No one has labelled this item." in page.text
    assert client.get("/item", params={"id": "nope"}).status_code == 404


def test_anonymous_post_is_refused(client, catalogue):
    """Without a login a correction is a 403 and nothing is written."""
    token = _csrf(client.get("/login").text)
    form = {"item_id": "a01", "product_type": "Pants", "csrf": token}
    refused = client.post("/item/label", data=form)
    assert refused.status_code == 403 and "Log in to correct tags" in refused.text
    with catalogue[0]() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Label)) == 0


def test_login_works_and_a_wrong_password_or_unknown_name_is_refused_alike(client):
    """A good login shows the user; a wrong password and an unknown name get the same
    401 and message (no telling which names exist)."""
    wrong = _log_in(client, password="not the password")
    unknown = _log_in(client, name="nobody")
    for refused in (wrong, unknown):
        assert refused.status_code == 401
        assert "Wrong user name or password." in refused.text
        assert "Signed in as" not in refused.text
    ok = _log_in(client)
    assert ok.status_code == 200 and "Signed in as <strong>ana</strong>" in ok.text
    client.post("/logout", data={"csrf": _csrf(ok.text)})
    assert "Signed in as" not in client.get("/").text


@pytest.mark.parametrize("token", [None, "", "forged-token"])
def test_a_post_without_the_sessions_csrf_token_is_refused(client, catalogue, token):
    """A logged-in user's correction with a missing or wrong token is a 403, not stored."""
    _log_in(client)
    form = {"item_id": "a01", "product_type": "Pants"}
    if token is not None:
        form["csrf"] = token
    refused = client.post("/item/label", data=form)
    assert refused.status_code == 403 and "security token" in refused.text
    with catalogue[0]() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Label)) == 0


def test_a_correction_is_stored_audited_and_shown_as_human(client, catalogue):
    """One click stores the label (by the user), audits it, redirects back to the item
    (303), and the item then shows source human; clearing shows the model's tag again."""
    token = _csrf(_log_in(client).text)
    form = {"item_id": "a01", "product_type": "Pants", "csrf": token, "back": "queue=all"}
    saved = client.post("/item/label", data=form, follow_redirects=False)
    assert saved.status_code == 303
    assert saved.headers["location"] == "/item?id=a01&back=queue%3Dall"
    page = client.get(saved.headers["location"])
    assert "Saved: product type Pants (by ana)." in page.text
    assert '<td colspan="2" class="source human">human</td>' in page.text
    with catalogue[0]() as s:
        row = s.execute(sa.select(current_tags).where(current_tags.c.item_id == "a01")).one()
        change = s.scalars(sa.select(LabelChange)).one()
    assert (row.product_type, row.source) == ("Pants", "human")
    assert (change.changed_by, change.before, change.after["product_type"]) == (
        "ana",
        None,
        "Pants",
    )
    assert "a01" not in _items(client.get("/").text)  # a labelled field needs no review
    cleared = client.post("/item/clear", data={"item_id": "a01", "csrf": token})
    assert "the model&#39;s tag shows again" in cleared.text and 'class="source model"' in (
        cleared.text
    )


def test_a_value_the_model_does_not_know_is_refused_with_its_message(client, catalogue):
    """The label's own check (tagger.labels) comes back as a message on the item page."""
    token = _csrf(_log_in(client).text)
    page = client.post(
        "/item/label", data={"item_id": "a01", "product_type": "Hats", "csrf": token}
    )
    assert "product type &#39;Hats&#39; is not one of" in page.text
    with catalogue[0]() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Label)) == 0


def test_a_trusted_proxy_header_names_the_user(catalogue, pg_url):
    """With TAGGER_WEB_AUTH_HEADER the header's user may correct (with the CSRF token)."""
    settings = Settings(database_url=pg_url, web_auth_header="X-Forwarded-User", web_secret=SECRET)
    with TestClient(create_app(settings), headers={"X-Forwarded-User": "bo"}) as c:
        token = _csrf(c.get("/item", params={"id": "a02"}).text)
        page = c.post("/item/label", data={"item_id": "a02", "gender": "MEN", "csrf": token})
    assert "Saved: gender MEN (by bo)." in page.text


def test_local_images_are_served_only_for_items_that_exist(client, catalogue, tmp_path):
    """The route reads the path from the item's row: an unknown id, a path given as the
    id, and an item whose file is not an image are all 404s."""
    image = client.get("/image", params={"id": "a01"})
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert image.content == Path(tmp_path / "images" / "a01.jpg").read_bytes()
    secret = tmp_path / "not-an-image.txt"
    secret.write_text("password=hunter2")
    with catalogue[0].begin() as s:
        s.add(Item(item_id="txt", image_uri=str(secret)))
    for item_id in ("nope", str(tmp_path / "images" / "a01.jpg"), "../a01", "txt"):
        refused = client.get("/image", params={"id": item_id})
        assert refused.status_code == 404 and "hunter2" not in refused.text


def test_s3_images_are_presigned_urls_without_the_secret_key(
    catalogue, pg_url, s3_client, bucket, s3_endpoint, monkeypatch, caplog
):
    """An s3:// item's image is a presigned URL that fetches the object; neither the page
    nor the logs hold the secret access key."""
    secret = "s3cr3t-Access-Key-Do-Not-Leak"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDWEBTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    data = jpeg_bytes(seed=42)
    s3_client.put_object(Bucket=bucket, Key="img/s3item.jpg", Body=data)
    with catalogue[0].begin() as s:
        s.add(Item(item_id="s3item", image_uri=f"s3://{bucket}/img/s3item.jpg"))
        s.flush()
        preds = {"s3item": scored_prediction("MEN", "Pants", product_score=0.5, margin=0.02)}
        save_batch(session=s, job_id=None, model_version="v1", predictions=preds, failures={})
    settings = Settings(
        database_url=pg_url, s3_endpoint_url=s3_endpoint, presign_seconds=120, web_secret=SECRET
    )
    with TestClient(create_app(settings)) as c:
        grid = c.get("/").text
        item = c.get("/item", params={"id": "s3item"}).text
        redirect = c.get("/image", params={"id": "s3item"}, follow_redirects=False)
    urls = re.findall(r'<img src="([^"]+)"', grid + item)
    presigned = [html.unescape(u) for u in urls if u.startswith(s3_endpoint)]
    assert len(presigned) == 2 and "X-Amz-Expires=120" in presigned[0]
    assert "X-Amz-Credential=AKIDWEBTEST" in presigned[0]
    assert redirect.status_code == 307 and redirect.headers["location"].startswith(s3_endpoint)
    with urllib.request.urlopen(presigned[0]) as fetched:
        assert fetched.read() == data
    for text in (grid, item, redirect.headers["location"], caplog.text):
        assert secret not in text


def test_add_user_prompts_twice_hidden_and_the_user_can_log_in(
    catalogue, pg_url, redis_url, tmp_path, monkeypatch
):
    """`tagger web add-user` asks for the password twice (not echoed), appends one line,
    refuses the same name again; the new user can log in."""
    from tagger.cli import cli

    path = tmp_path / "web-users"
    monkeypatch.setenv("TAGGER_WEB_USERS_FILE", str(path))
    monkeypatch.setenv("TAGGER_DATABASE_URL", pg_url)
    runner = CliRunner()
    done = runner.invoke(cli, ["web", "add-user", "cy"], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert done.exit_code == 0, done.output
    assert PASSWORD not in done.output and done.output.count("Password") == 1
    (line,) = path.read_text().splitlines()
    assert line.startswith("cy:pbkdf2_sha256$600000$") and path.stat().st_mode & 0o077 == 0
    again = runner.invoke(cli, ["web", "add-user", "cy", "--password-stdin"], input="x" * 9)
    assert again.exit_code != 0 and "already in" in str(again.exception)
    settings = Settings(
        database_url=pg_url, broker_url=redis_url, web_users_file=path, web_secret=SECRET
    )
    with TestClient(create_app(settings)) as c:
        assert "Signed in as <strong>cy</strong>" in _log_in(c, name="cy").text


def test_a_user_removed_from_the_file_is_logged_out(client, users_file):
    """The users file is read again when it changes: a removed user's session ends."""
    assert "Signed in as" in _log_in(client).text
    users_file.write_text("# nobody\n")
    assert "Signed in as" not in client.get("/").text


@pytest.mark.parametrize("secure", [True, False])
def test_the_session_cookie_is_secure_only_when_set(
    catalogue, pg_url, redis_url, users_file, secure
):
    """TAGGER_WEB_SECURE_COOKIE on: the cookie a login sets carries Secure (sent over
    HTTPS only); off (the default), it does not. HttpOnly and SameSite=Lax either way."""
    settings = Settings(
        database_url=pg_url,
        broker_url=redis_url,
        web_users_file=users_file,
        web_secret=SECRET,
        web_secure_cookie=secure,
    )
    assert Settings.model_fields["web_secure_cookie"].default is False
    with TestClient(create_app(settings), base_url="https://testserver") as c:
        token = _csrf(c.get("/login").text)
        form = {"name": "ana", "password": PASSWORD, "csrf": token}
        done = c.post("/login", data=form, follow_redirects=False)
    assert done.status_code == 303
    flags = [f.strip().lower() for f in done.headers["set-cookie"].split(";")]
    assert flags[0].startswith("tagger_session=")
    assert ("secure" in flags) is secure
    assert "httponly" in flags and "samesite=lax" in flags
