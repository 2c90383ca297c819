"""Who may correct tags: users from a file of PBKDF2 hashes, or a trusted proxy's header;
sessions in a signed cookie; a CSRF token per session on every form.

The users file has one ``name:pbkdf2_sha256$iterations$salt$hash`` line per user (salt and
hash in hex; `tagger web add-user` appends them). It is read again whenever it changes, so
adding or removing a user needs no restart, and a removed user's session stops working.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request

from tagger.exceptions import ConfigError
from tagger.settings import Settings

log = logging.getLogger(__name__)

SCHEME = "pbkdf2_sha256"
#: OWASP's 2023 figure for PBKDF2-HMAC-SHA256: ~0.3 s a check here, a guess costs as much.
ITERATIONS = 600_000
NAME = re.compile(r"[A-Za-z0-9._@+-]{1,64}")
MIN_PASSWORD = 8
#: The session keys this module owns.
USER, CSRF = "user", "csrf"


class UsersFileError(ConfigError):
    """The users file cannot take this user (a bad name, a name already there)."""


def hash_password(password: str, *, iterations: int = ITERATIONS) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"{SCHEME}${iterations}${salt.hex()}${digest.hex()}"


def check_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded`` (compared in constant time)."""
    try:
        scheme, iterations, salt, expected = encoded.split("$")
        if scheme != SCHEME or not 1 <= int(iterations) <= 10_000_000:
            return False
        digest = hashlib.pbkdf2_hmac(
            "sha256", password.encode(), bytes.fromhex(salt), int(iterations)
        )
        return hmac.compare_digest(digest, bytes.fromhex(expected))
    except ValueError:
        return False


@dataclass
class _Cached:
    key: tuple[int, int]
    users: dict[str, str]


class Users:
    """The users file, re-read when its size or modification time changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._cached: _Cached | None = None
        self._decoy: str | None = None
        self._unreadable = False  # warned about once, not on every request

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def all(self) -> dict[str, str]:
        """{name: encoded hash}; empty while the file cannot be read (said once in the log)."""
        if self.path is None:
            return {}
        try:
            stat = self.path.stat()
            key = (stat.st_mtime_ns, stat.st_size)
            if self._cached is None or self._cached.key != key:
                self._cached = _Cached(key, read_users(self.path))
        except (OSError, UnicodeDecodeError) as exc:
            if not self._unreadable:
                log.warning("users file %s cannot be read (%s): nobody can log in", self.path, exc)
            self._unreadable, self._cached = True, None
            return {}
        self._unreadable = False
        return self._cached.users

    def authenticate(self, name: str, password: str) -> str | None:
        """The user's name when the password is theirs, else None (whatever was wrong)."""
        encoded = self.all().get(name)
        if encoded is None:
            # Checked all the same, against a hash of nothing anyone knows: an unknown name
            # costs as much time as a wrong password (names cannot be told apart by timing).
            if self._decoy is None:
                self._decoy = hash_password(secrets.token_hex(16))
            check_password(password, self._decoy)
            return None
        return name if check_password(password, encoded) else None

    def exists(self, name: str) -> bool:
        return name in self.all()


def read_users(path: Path) -> dict[str, str]:
    """{name: encoded hash} of the file's lines; bad lines are skipped with a warning that
    names their line number only (never their content: it holds hashes)."""
    users: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, encoded = line.partition(":")
        if not NAME.fullmatch(name) or not encoded.startswith(SCHEME + "$"):
            log.warning("users file %s: line %d is not name:%s$...; skipped", path, number, SCHEME)
            continue
        users[name] = encoded
    return users


def add_user(path: Path, name: str, password: str, *, iterations: int = ITERATIONS) -> None:
    """Append ``name`` with a hash of ``password`` to the users file (created readable by
    its owner only). Refuses a bad name, a short password and a name already there."""
    if not NAME.fullmatch(name):
        raise UsersFileError(
            f"user name {name!r}: use 1-64 letters, digits and . _ @ + - (no spaces or colons)"
        )
    if len(password) < MIN_PASSWORD:
        raise UsersFileError(f"the password must have at least {MIN_PASSWORD} characters")
    if path.exists() and name in read_users(path):
        raise UsersFileError(f"user {name!r} is already in {path}")
    line = f"{name}:{hash_password(password, iterations=iterations)}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        if out.tell() > 0 and not path.read_bytes().endswith(b"\n"):
            out.write("\n")
        out.write(line)


def session_secret(settings: Settings) -> str:
    """The key that signs session cookies: the setting, or a random one per process (with
    a warning; the key itself is never logged)."""
    if settings.web_secret is not None and settings.web_secret.get_secret_value():
        return settings.web_secret.get_secret_value()
    log.warning(
        "TAGGER_WEB_SECRET is not set: sessions are signed with a random key, so logins end "
        "when this process restarts and do not carry over to other `tagger web` processes"
    )
    return secrets.token_urlsafe(32)


def current_user(request: Request, *, settings: Settings, users: Users) -> str | None:
    """Who is logged in: the proxy's header (when one is trusted), else the session's user
    while the users file still holds them."""
    if settings.web_auth_header:
        name = request.headers.get(settings.web_auth_header, "").strip()
        if name:
            return name
    name = request.session.get(USER)
    if isinstance(name, str) and users.exists(name):
        return name
    return None


def can_log_in(settings: Settings) -> bool:
    return settings.web_users_file is not None or bool(settings.web_auth_header)


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use): every form carries it."""
    token = request.session.get(CSRF)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        request.session[CSRF] = token
    return token


def csrf_ok(request: Request, submitted: object) -> bool:
    expected = request.session.get(CSRF)
    if not isinstance(expected, str) or not isinstance(submitted, str) or not expected:
        return False
    return hmac.compare_digest(expected.encode(), submitted.encode())


def log_in(request: Request, name: str) -> None:
    """A fresh session for ``name``: anything the anonymous session held goes, including
    its CSRF token, so a token seen before the login is no use after it."""
    request.session.clear()
    request.session[USER] = name
    request.session[CSRF] = secrets.token_urlsafe(32)
