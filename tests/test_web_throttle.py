"""Login throttling (tagger.web.throttle) on the real app and the real Redis: failed logins
are counted per user name and per client address in a fixed window shared by every
`tagger web` process; over the limit a login is a 429 without its password checked; with
Redis unreachable logins are a 503 (fail closed); the proxy-header mode is unaffected."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from starlette.testclient import TestClient

from tagger.settings import Settings
from tagger.web import auth
from tagger.web.app import create_app
from tagger.web.throttle import PREFIX, LoginThrottle, address_key, user_key
from tests import services
from tests.test_web import PASSWORD, SECRET, _csrf

LIMIT = 3
HERE, THERE = ("10.0.0.1", 40001), ("10.0.0.2", 40002)


@pytest.fixture
def users_file(tmp_path):
    path = tmp_path / "users"
    for name in ("ana", "bo"):
        auth.add_user(path, name, PASSWORD, iterations=1000)
    return path


@pytest.fixture
def settings(pg_url, redis_url, users_file) -> Settings:
    return Settings(
        database_url=pg_url,
        broker_url=redis_url,
        web_users_file=users_file,
        web_secret=SECRET,
        web_login_attempts=LIMIT,
    )


@pytest.fixture
def checks(monkeypatch) -> list[str]:
    """The names whose passwords were checked (Users.authenticate calls), in order."""
    seen: list[str] = []
    real = auth.Users.authenticate

    def counted(self, name: str, password: str) -> str | None:
        seen.append(name)
        return real(self, name, password)

    monkeypatch.setattr(auth.Users, "authenticate", counted)
    return seen


def _client(settings: Settings, address: tuple[str, int] = HERE) -> TestClient:
    return TestClient(create_app(settings), client=address)


def _log_in(client: TestClient, name: str, password: str = PASSWORD):
    token = _csrf(client.get("/login").text)
    form = {"name": name, "password": password, "csrf": token}
    return client.post("/login", data=form, follow_redirects=False)


def test_the_attempt_after_the_limit_is_refused_even_with_the_right_password(settings, checks):
    """N wrong passwords are 401s; the N+1th login, right password and all, is a 429
    saying when to try again, and its password is never checked."""
    with _client(settings) as c:
        for _ in range(LIMIT):
            assert _log_in(c, "ana", "wrong password").status_code == 401
        refused = _log_in(c, "ana")
        assert "Signed in as" not in c.get("/login").text
    assert refused.status_code == 429
    assert "Too many failed logins" in refused.text and "try again in 15 minutes" in refused.text
    assert 890 <= int(refused.headers["retry-after"]) <= 900
    assert checks == ["ana"] * LIMIT


def test_the_limit_holds_per_name_and_per_address(settings, checks):
    """Once ana has N failures from one address: ana is refused from another address, and
    anyone from that address is refused; another name from another address logs in."""
    with _client(settings, HERE) as here:
        for _ in range(LIMIT):
            assert _log_in(here, "ana", "wrong password").status_code == 401
        assert _log_in(here, "bo").status_code == 429  # the address is over the limit
    with _client(settings, THERE) as there:
        assert _log_in(there, "ana").status_code == 429  # the name is over the limit
        ok = _log_in(there, "bo")
        assert ok.status_code == 303
        assert "Signed in as <strong>bo</strong>" in there.get("/login").text
    assert checks == ["ana"] * LIMIT + ["bo"]


def test_two_app_instances_share_the_count(settings, checks):
    """Failures in one app (one `tagger web` process) count in another: the limit is
    reached across both."""
    with _client(settings) as first, _client(settings) as second:
        assert _log_in(first, "ana", "wrong").status_code == 401
        assert _log_in(second, "ana", "wrong").status_code == 401
        assert _log_in(first, "ana", "wrong").status_code == 401
        assert _log_in(second, "ana").status_code == 429
        assert _log_in(first, "ana").status_code == 429
    assert len(checks) == LIMIT


def test_a_success_clears_the_names_count_but_not_the_addresss(settings):
    """A good login forgets the name's failures, not the other failures from its address."""
    with _client(settings, HERE) as here, _client(settings, THERE) as there:
        for _ in range(LIMIT - 1):
            assert _log_in(here, "ana", "wrong").status_code == 401
        assert _log_in(here, "ana").status_code == 303
        for _ in range(LIMIT - 1):  # ana's count starts again
            assert _log_in(there, "ana", "wrong").status_code == 401
        assert _log_in(here, "bo", "wrong").status_code == 401  # HERE's third failure
        assert _log_in(here, "bo").status_code == 429
        assert _log_in(there, "bo").status_code == 303


def test_the_window_ends_and_logins_are_checked_again(settings):
    """Counts expire with their fixed window: after it, the right password logs in."""
    # The window must outlast the failed logins before the refusal (six requests) even
    # on a loaded machine, and the sleep must outlast the window.
    short = settings.model_copy(update={"web_login_window_seconds": 3})
    with _client(short) as c:
        for _ in range(LIMIT):
            assert _log_in(c, "ana", "wrong").status_code == 401
        refused = _log_in(c, "ana")
        assert refused.status_code == 429 and "try again in 1 minute." in refused.text
        time.sleep(3.5)
        assert _log_in(c, "ana").status_code == 303


def test_parallel_guesses_cannot_pass_the_limit(settings, redis_url):
    """Many logins at once for one name: only N passwords are checked (each attempt is
    counted before its check), the rest are refused."""
    throttle = LoginThrottle.from_settings(settings)
    checked: list[str] = []
    lock = threading.Lock()

    def slow_wrong(name: str, password: str) -> None:
        with lock:
            checked.append(password)
        time.sleep(0.2)

    answers: list[int] = []
    threads = [
        threading.Thread(
            target=lambda i=i: answers.append(
                throttle.attempt("ana", f"guess {i}", f"10.0.1.{i}", slow_wrong).status
            )
        )
        for i in range(10)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    throttle.close()
    assert len(checked) == LIMIT
    assert sorted(answers) == [401] * LIMIT + [429] * (10 - LIMIT)


def test_keys_are_namespaced_hashed_and_expire(settings, redis_db):
    """Counters live under tagger:web:login:, one fixed-shape key per name (odd names,
    colons included, cannot collide) and per address, each with the window's TTL."""
    odd = "ana:addr:x"
    assert user_key(odd) != user_key("ana") and ":" not in user_key(odd).removeprefix(PREFIX)[5:]
    assert user_key("a" * 10_000).startswith(PREFIX + "user:") and len(user_key("a" * 10_000)) < 100
    with _client(settings) as c:
        assert _log_in(c, odd, "wrong").status_code == 401
    redis = services.redis_client(redis_db)
    keys = sorted(k.decode() for k in redis.keys("*"))
    assert keys == sorted([user_key(odd), address_key(HERE[0])])
    for key in keys:
        assert key.startswith(PREFIX) and 0 < redis.ttl(key) <= 900
        assert redis.get(key) == b"1"
    redis.close()


def test_unreachable_redis_refuses_logins_with_503_and_logs_it_masked(settings, checks, caplog):
    """Redis on a closed port: the login is a 503 naming the problem, no password is
    checked, and one log line names Redis with its password masked (and no form data)."""
    down = settings.model_copy(
        update={"broker_url": f"redis://:redis-pass-123@127.0.0.1:{services.free_port()}/0"}
    )
    with caplog.at_level(logging.INFO, logger="tagger.web"), _client(down) as c:
        refused = _log_in(c, "ana")
    assert refused.status_code == 503
    assert "cannot be reached" in refused.text and "Redis" in refused.text
    assert checks == []
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "Redis at redis://:***@127.0.0.1:" in errors[0].getMessage()
    assert "redis-pass-123" not in caplog.text and PASSWORD not in caplog.text


def test_the_proxy_header_mode_needs_no_redis(pg_url):
    """With a trusted auth header and no users file the page signs the user in without
    Redis (here unreachable); there is no password login to throttle."""
    down = Settings(
        database_url=pg_url,
        broker_url=f"redis://127.0.0.1:{services.free_port()}/0",
        web_auth_header="X-Forwarded-User",
        web_secret=SECRET,
    )
    with TestClient(create_app(down), headers={"X-Forwarded-User": "bo"}) as c:
        page = c.get("/login")
        assert page.status_code == 200 and "signed in as <strong>bo</strong>" in page.text
        refused = c.post("/login", data={"csrf": _csrf(page.text), "name": "bo"})
    assert refused.status_code == 403 and "No users are configured" in refused.text
