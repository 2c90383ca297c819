"""The review page under a path prefix (TAGGER_WEB_ROOT_PATH, tagger.web.paths): every
link, image, form and redirect the page writes starts with the prefix and works, whether
the proxy passes requests on with the prefix or strips it; the login's "next" stays under
it; without a prefix the page's URLs are what they were."""

from __future__ import annotations

import html
import os
import urllib.request
from html.parser import HTMLParser
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from tagger.exceptions import ConfigError
from tagger.settings import Settings, load_settings
from tagger.web import auth
from tagger.web.app import create_app
from tagger.web.paths import safe_next
from tests.processes import stop
from tests.test_web import PASSWORD, SECRET, _csrf, _seed
from tests.test_web_browser import _serve

ROOT = "/tagger"


class _Links(HTMLParser):
    """Every href, src and action of a page, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("href", "src", "action") and v is not None]


def _urls(page: str) -> list[str]:
    parser = _Links()
    parser.feed(page)
    return parser.urls


@pytest.fixture
def catalogue(session_factory, tmp_path, monkeypatch):
    """test_web's catalogue, shown 3 items a page (so the grid has page links)."""
    monkeypatch.setattr("tagger.web.app.PAGE_SIZE", 3)
    return session_factory, _seed(session_factory, tmp_path / "images")


@pytest.fixture
def users_file(tmp_path):
    path = tmp_path / "users"
    auth.add_user(path, "ana", PASSWORD, iterations=1000)
    return path


def _settings(pg_url: str, redis_url: str, users_file, root: str = "") -> Settings:
    return Settings(
        database_url=pg_url,
        broker_url=redis_url,
        web_users_file=users_file,
        web_secret=SECRET,
        web_root_path=root,
    )


def _log_in(client: TestClient, at: str, next: str = "") -> str:
    """Log ana in from ``at``'s login page; the redirect's location."""
    page = client.get(at + "/login", params={"next": next} if next else None)
    target = html.unescape(page.text.split('name="next" value="')[1].split('"')[0])
    form = {"name": "ana", "password": PASSWORD, "csrf": _csrf(page.text), "next": target}
    done = client.post(at + "/login", data=form, follow_redirects=False)
    assert done.status_code == 303, done.text
    return done.headers["location"]


def _pages(client: TestClient, at: str) -> dict[str, list[str]]:
    """The URLs of the grid (two pages), an item page (anonymous and logged in), the login
    page and an error page, asked for under ``at`` (the page's prefix, or "")."""
    grid = _urls(client.get(at + "/").text)
    (second,) = [u for u in grid if "after=" in u]
    pages = {
        "grid": grid,
        "grid page 2": _urls(client.get(at + second.removeprefix(ROOT)).text),
        "item": _urls(client.get(at + "/item", params={"id": "a01", "back": "queue=all"}).text),
        "login": _urls(client.get(at + "/login").text),
        "missing": _urls(client.get(at + "/item", params={"id": "nope"}).text),
    }
    _log_in(client, at)
    client.post(
        at + "/item/label", data={"item_id": "a02", "gender": "MEN", "csrf": _token(client, at)}
    )
    pages["item, logged in"] = _urls(client.get(at + "/item", params={"id": "a02"}).text)
    return pages


def _token(client: TestClient, at: str) -> str:
    return _csrf(client.get(at + "/item", params={"id": "a02"}).text)


def _stripping_proxy(app: ASGIApp) -> ASGIApp:
    """``app`` behind a proxy that takes /tagger off the path before passing it on."""

    async def proxy(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(ROOT):
            path = scope["path"].removeprefix(ROOT) or "/"
            scope = {**scope, "path": path, "raw_path": path.encode()}
        await app(scope, receive, send)

    return proxy


@pytest.mark.parametrize("strips", [False, True], ids=["proxy keeps prefix", "proxy strips it"])
def test_every_url_on_the_pages_starts_with_the_prefix_and_works(
    catalogue, pg_url, redis_url, users_file, strips
):
    """Grid (two pages), item (anonymous and logged in), login and error pages: every href,
    src and action starts with /tagger/, and each one to GET answers 200, whether the
    proxy passes the prefix on or strips it."""
    app = create_app(_settings(pg_url, redis_url, users_file, ROOT))
    with TestClient(_stripping_proxy(app) if strips else app) as c:
        pages = _pages(c, ROOT)
        for name, urls in pages.items():
            assert urls, name
            for url in urls:
                assert url.startswith(ROOT + "/"), (name, url)
        assert any(u.startswith(ROOT + "/image?") for u in pages["grid"])
        assert any("after=" in u for u in pages["grid"])
        assert f"{ROOT}/item/label" in pages["item, logged in"]
        assert f"{ROOT}/logout" in pages["item, logged in"]
        posts = {f"{ROOT}/item/label", f"{ROOT}/item/clear", f"{ROOT}/logout", f"{ROOT}/login"}
        for url in {u for urls in pages.values() for u in urls} - posts:
            assert c.get(url).status_code == 200, url


def test_a_correction_posts_and_redirects_under_the_prefix(
    catalogue, pg_url, redis_url, users_file
):
    """The item's form posts to /tagger/item/label; the 303 goes to /tagger/item?..., which
    shows the saved label; logging out lands on /tagger/."""
    with TestClient(create_app(_settings(pg_url, redis_url, users_file, ROOT))) as c:
        assert _log_in(c, ROOT) == ROOT + "/"
        token = _token(c, ROOT)
        form = {"item_id": "a01", "product_type": "Pants", "csrf": token, "back": "queue=all"}
        saved = c.post(ROOT + "/item/label", data=form, follow_redirects=False)
        assert saved.status_code == 303
        assert saved.headers["location"] == ROOT + "/item?id=a01&back=queue%3Dall"
        assert "Saved: product type Pants (by ana)." in c.get(saved.headers["location"]).text
        out = c.post(ROOT + "/logout", data={"csrf": token}, follow_redirects=False)
        assert out.headers["location"] == ROOT + "/"


def test_the_session_cookie_is_scoped_to_the_prefix(catalogue, pg_url, redis_url, users_file):
    """Under /tagger the session cookie's path is /tagger; at / it is /."""
    for root, path in ((ROOT, ROOT), ("", "/")):
        with TestClient(create_app(_settings(pg_url, redis_url, users_file, root))) as c:
            cookie = c.get(root + "/login").headers["set-cookie"]
            assert f"path={path};" in cookie.lower()


@pytest.mark.parametrize(
    ("next", "lands"),
    [
        ("/tagger/item?id=a01", "/tagger/item?id=a01"),
        ("/tagger/?queue=all", "/tagger/?queue=all"),
        ("", "/tagger/"),
        ("/item?id=a01", "/tagger/"),  # not under the prefix
        ("/taggerx/item", "/tagger/"),
        ("//evil.example/tagger/", "/tagger/"),
        ("/\\evil.example", "/tagger/"),
        ("https://evil.example/tagger/", "/tagger/"),
        ("/tagger/item\r\nSet-Cookie: x=1", "/tagger/"),
    ],
)
def test_the_login_goes_next_only_to_paths_under_the_prefix(
    catalogue, pg_url, redis_url, users_file, next, lands
):
    """After a login the browser goes to "next" only when it is a path under /tagger on
    this site; anything else (other hosts, paths outside the prefix) lands on /tagger/."""
    with TestClient(create_app(_settings(pg_url, redis_url, users_file, ROOT))) as c:
        assert _log_in(c, ROOT, next) == lands


def test_the_log_in_link_comes_back_to_the_page_under_the_prefix(
    catalogue, pg_url, redis_url, users_file
):
    """The header's "Log in" on an item page carries that page (prefix and all) as next,
    and the login returns there."""
    with TestClient(create_app(_settings(pg_url, redis_url, users_file, ROOT))) as c:
        page = c.get(ROOT + "/item", params={"id": "a03"}).text
        link = next(u for u in _urls(page) if u.startswith(ROOT + "/login?next="))
        (back,) = parse_qs(urlsplit(link).query)["next"]
        assert back == ROOT + "/item?id=a03"
        assert _log_in(c, ROOT, back) == ROOT + "/item?id=a03"


@pytest.mark.parametrize(
    ("prefix", "target", "expected"),
    [
        ("", "/item?id=1", "/item?id=1"),
        ("", "", "/"),
        ("", "//evil.example", "/"),
        ("", "/\\evil.example", "/"),
        ("", "http://evil.example/", "/"),
        ("", "/x\nLocation: //evil", "/"),
        ("/a/b", "/a/b", "/a/b"),
        ("/a/b", "/a/b/item", "/a/b/item"),
        ("/a/b", "/a/bc", "/a/b/"),
        ("/a/b", "/a", "/a/b/"),
    ],
)
def test_safe_next(prefix, target, expected):
    """safe_next keeps paths on this site under the prefix, and nothing else."""
    assert safe_next(target, prefix) == expected


def test_without_a_prefix_the_urls_are_as_before(catalogue, pg_url, redis_url, users_file):
    """With no root path every URL is the prefixed page's URL less /tagger: /static/...,
    /item?..., /login, and the style sheet is at /static/review.css."""
    with TestClient(create_app(_settings(pg_url, redis_url, users_file))) as plain:
        before = _pages(plain, "")
    with TestClient(create_app(_settings(pg_url, redis_url, users_file, ROOT))) as prefixed:
        after = _pages(prefixed, ROOT)
    assert before.keys() == after.keys()
    for name in before:
        # The same URLs, less the prefix (in "next" values too, which are paths here).
        unprefixed = [unquote(u).removeprefix(ROOT).replace(f"={ROOT}/", "=/") for u in after[name]]
        assert [unquote(u) for u in before[name]] == unprefixed, name
        assert not any(u.startswith(ROOT) for u in before[name]), name
    assert before["grid"][0] == "/static/review.css" and "/item/label" in before["item, logged in"]


@pytest.mark.parametrize(
    "value", ["tagger", "/tagger/", "/", "//evil.example", "/a//b", "/..", "/a?b", "/a b"]
)
def test_a_bad_root_path_is_refused_naming_the_variable(monkeypatch, value):
    """Not empty and not /segment[/segment...]: a one-line error naming the variable."""
    monkeypatch.setenv("TAGGER_WEB_ROOT_PATH", value)
    with pytest.raises(ConfigError, match="TAGGER_WEB_ROOT_PATH"):
        load_settings()


@pytest.mark.parametrize("value", ["", "/tagger", "/review/tagger-2", "/a.b/c_d"])
def test_good_root_paths_are_taken(monkeypatch, value):
    """An empty prefix and plain /a/b paths are accepted as they are."""
    monkeypatch.setenv("TAGGER_WEB_ROOT_PATH", value)
    assert load_settings().web_root_path == value


def test_tagger_web_serves_under_the_prefix(db, catalogue, settings_env, users_file, tmp_path):
    """`tagger web` with TAGGER_WEB_ROOT_PATH (uvicorn, a process of its own) says where it
    is, and serves the page and its style sheet at /tagger/ (and to a stripping proxy)."""
    env = {
        **os.environ,
        "TAGGER_WEB_ROOT_PATH": ROOT,
        "TAGGER_WEB_USERS_FILE": str(users_file),
        "TAGGER_WEB_SECRET": SECRET,
    }
    log = tmp_path / "web.log"
    server, url = _serve(env, log)
    try:
        with urllib.request.urlopen(f"{url}{ROOT}/?queue=all") as page:
            text = page.read().decode()
        assert 'href="/tagger/static/review.css"' in text and "a01" in text
        for path in (f"{ROOT}/static/review.css", "/static/review.css", f"{ROOT}/item?id=a01"):
            with urllib.request.urlopen(url + path) as answer:
                assert answer.status == 200, path
    finally:
        stop([server])
    assert f"tagger web on {url}{ROOT}/" in log.read_text()
