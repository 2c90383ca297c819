"""One-line messages for errors a user must act on, above all an unreachable service.

A stopped Postgres, Redis or S3 endpoint reaches a command as a deep exception chain
(SQLAlchemy -> psycopg2, kombu -> redis-py -> socket, botocore -> urllib3 -> socket),
often wrapped in one of ours (StorageError, ArtifactError, PublishError). `tagger` turns
such a chain into one line naming the service, its URL with the password masked, and the
reason, e.g. ``cannot reach Postgres at postgresql+psycopg2://tagger:***@db:5432/tagger:
connection refused``, and exits with EX_UNAVAILABLE so scripts can tell "try again later"
from a mistake. Any password from the settings is scrubbed from every line shown.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import botocore.exceptions
import kombu.exceptions
import redis.exceptions
import sqlalchemy.exc

from tagger.exceptions import TaggerError
from tagger.settings import Settings, mask_url_password

EXIT_ERROR = 1
EXIT_UNAVAILABLE = 69  # sysexits.h EX_UNAVAILABLE: a service is down, retry later

_REDIS_ERRORS = (
    kombu.exceptions.OperationalError,  # what Celery raises when publishing fails to connect
    redis.exceptions.ConnectionError,  # includes AuthenticationError
    redis.exceptions.TimeoutError,
)
_S3_ERRORS = (
    botocore.exceptions.ConnectionError,  # endpoint, connect timeout, proxy, SSL
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectionClosedError,
)
# libpq prefixes its reason with where it tried: 'connection to server at "h", port 1 failed: '
_LIBPQ_WHERE = re.compile(r"^connection to server (?:at|on) .*? failed:\s*")


@dataclass(frozen=True)
class UserError:
    message: str  # one line, without the "error: " prefix, secrets scrubbed
    exit_code: int


@dataclass(frozen=True)
class Unreachable:
    service: str  # "Postgres", "SQLite", "Redis", "S3"
    url: str | None  # password masked
    reason: str

    def describe(self, reason: str | None = None) -> str:
        """The line, with ``reason`` in place of the raw one (e.g. scrubbed) if given."""
        verb = "open" if self.service == "SQLite" else "reach"
        where = f" at {self.url}" if self.url else ""
        return f"cannot {verb} {self.service}{where}: {reason or self.reason}"


def user_error(exc: BaseException, settings: Settings | None) -> UserError | None:
    """The one line to show for ``exc``, or None for an unexpected error (a bug: let its
    traceback through). ``settings`` supplies the URLs; None if they could not be read."""
    down = find_unreachable(exc, settings)
    if down is not None:
        # Only the driver's text is scrubbed: the URL is masked already, and scrubbing our
        # own words would garble them when the password is a word too ("tagger").
        message = down.describe(redact(down.reason, settings))
        # A failed publish leaves a saved job behind: say how to queue it once Redis is back.
        next_step = _next_step(exc)
        if next_step:
            message += f"; {next_step}"
        return UserError(message, EXIT_UNAVAILABLE)
    if isinstance(exc, TaggerError):
        return UserError(redact(_one_line(str(exc)), settings), EXIT_ERROR)
    return None


def find_unreachable(exc: BaseException, settings: Settings | None) -> Unreachable | None:
    """The service whose connection failure caused ``exc``, if any."""
    for e in chain(exc):
        if isinstance(e, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            # statement is None: the connect itself failed; connection_invalidated: the link
            # dropped mid-query. Other OperationalErrors (deadlocks, timeouts) are not ours.
            if e.statement is None or e.connection_invalidated:
                return _database(e, settings)
        elif isinstance(e, _REDIS_ERRORS):
            url = settings.redacted()["broker_url"] if settings else None
            return Unreachable("Redis", str(url) if url else None, reason(e))
        elif isinstance(e, _S3_ERRORS):
            return Unreachable("S3", _s3_url(e, settings), reason(e))
    return None


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what caused it, innermost last. Follows implicit contexts as well:
    storage.py re-raises botocore errors ``from None``, which hides them from tracebacks
    but keeps them on ``__context__``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def reason(exc: BaseException) -> str:
    """A short reason ("connection refused", "timed out", a libpq message) for ``exc``."""
    for e in chain(exc):
        if isinstance(e, OSError) and e.strerror:
            return _lower_first(e.strerror)
        if isinstance(e, TimeoutError):
            return "timed out"
    text = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) else exc
    line = _first_line(str(text))
    line = _LIBPQ_WHERE.sub("", line)
    line = re.sub(r"^FATAL:\s+", "", line)
    return _lower_first(line.rstrip(".")) or type(exc).__name__


def redact(text: str, settings: Settings | None) -> str:
    """``text`` with every password found in the settings' URLs replaced by ***."""
    if settings is None:
        return text
    for url in (settings.database_url, settings.broker_url, settings.s3_endpoint_url):
        password = _password(url)
        if password:
            text = text.replace(password, "***")
    return text


def _database(e: sqlalchemy.exc.DBAPIError, settings: Settings | None) -> Unreachable:
    driver = type(e.orig).__module__ if e.orig is not None else ""
    url = settings.redacted()["database_url"] if settings else None
    if driver.startswith("sqlite") or (settings and settings.database_url.startswith("sqlite")):
        return Unreachable("SQLite", str(url) if url else None, reason(e))
    return Unreachable("Postgres", str(url) if url else None, reason(e))


def _s3_url(e: BaseException, settings: Settings | None) -> str:
    if settings is not None and settings.s3_endpoint_url:
        return mask_url_password(settings.s3_endpoint_url)
    # AWS itself: botocore knows which regional endpoint it tried; keep only its host.
    tried = getattr(e, "kwargs", {}).get("endpoint_url")
    if tried:
        parts = urlsplit(str(tried))
        return f"{parts.scheme}://{parts.hostname}"
    return f"AWS S3 ({settings.s3_region})" if settings else "AWS S3"


def _next_step(exc: BaseException) -> str | None:
    # Any of our errors may name the user's next step (tagger.messages.PublishError does);
    # read as an attribute, so no error class has to be imported here.
    for e in chain(exc):
        step = getattr(e, "next_step", None) if isinstance(e, TaggerError) else None
        if step:
            return str(step)
    return None


def _password(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return urlsplit(url).password
    except ValueError:  # a malformed port: the URL is unusable anyway
        return None


def _first_line(text: str) -> str:
    # libpq adds hints on later lines ("Is the server running on that host ...?").
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else ""


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _lower_first(text: str) -> str:
    # "Connection refused" -> "connection refused", but leave "FATAL" or "EOF" alone.
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        return text[0].lower() + text[1:]
    return text
