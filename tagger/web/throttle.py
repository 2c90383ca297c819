"""Login throttling for the review page, shared by every `tagger web` process through Redis.

Failed logins are counted per user name and per client address in fixed windows
(``web_login_window_seconds`` from the first failure). Once either count reaches
``web_login_attempts``, logins for that name or from that address are refused until the
window ends, before any password is checked: no timing to learn from and no PBKDF2 to pay.

An attempt is counted *before* its password is checked (one atomic script checks both
counts and adds to them), so parallel guesses cannot slip past the limit while their
checks run; a good password then takes its count back from the address and clears the
name's. If Redis cannot be reached, logins are refused (fail closed): a throttle that
stops counting when its store is down would be no throttle.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis
import redis.exceptions

from tagger.settings import Settings, mask_url_password

log = logging.getLogger(__name__)

PREFIX = "tagger:web:login:"

# KEYS: the name's and the address's counters; ARGV: the limit, the window in seconds.
# Refused: {0, seconds left}. Counted: {1, 0}; a new counter expires with its window.
_RESERVE = """
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local wait = 0
for _, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') >= limit then
    local ttl = redis.call('TTL', key)
    if ttl < 0 then
      redis.call('EXPIRE', key, window)
      ttl = window
    end
    if ttl > wait then wait = ttl end
  end
end
if wait > 0 then return {0, wait} end
for _, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 then redis.call('EXPIRE', key, window) end
end
return {1, 0}
"""
# KEYS: the name's and the address's counters. The name's goes; the address's gives back
# the attempt just counted (if its window has not ended meanwhile).
_SUCCEEDED = """
redis.call('DEL', KEYS[1])
if tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then redis.call('DECR', KEYS[2]) end
return 1
"""


@dataclass(frozen=True)
class Verdict:
    """How a login went: ``user`` when it succeeded, else the status and message to show."""

    user: str | None
    status: int = 200
    message: str = ""
    retry_after: int | None = None


def user_key(name: str) -> str:
    # Hashed: any name (long, odd characters, colons) makes one fixed-shape key of its own.
    return PREFIX + "user:" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()


def address_key(address: str) -> str:
    return PREFIX + "addr:" + hashlib.sha256(address.encode("utf-8", "surrogatepass")).hexdigest()


class LoginThrottle:
    """Counts failed logins in Redis; ``attempt`` checks, counts and settles one login."""

    def __init__(self, client: redis.Redis, *, attempts: int, window: int, url: str) -> None:
        self.client = client
        self.attempts = attempts
        self.window = window
        self.url = url  # logged only with its password masked
        self._reserve = client.register_script(_RESERVE)
        self._succeeded = client.register_script(_SUCCEEDED)

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginThrottle:
        """A client on ``settings.broker_url`` (it connects on first use, not here)."""
        timeout = settings.redis_socket_timeout
        client = redis.Redis.from_url(
            settings.broker_url,
            socket_timeout=timeout,
            socket_connect_timeout=min(timeout, 5.0),
            health_check_interval=settings.redis_health_check_interval,
        )
        return cls(
            client,
            attempts=settings.web_login_attempts,
            window=settings.web_login_window_seconds,
            url=settings.broker_url,
        )

    def close(self) -> None:
        self.client.close()

    def attempt(
        self, name: str, password: str, address: str, check: Callable[[str, str], str | None]
    ) -> Verdict:
        """One login: refused (429) without calling ``check`` when the name or the address
        is over the limit, 503 when Redis cannot be reached, else ``check``'s answer."""
        keys = [user_key(name), address_key(address)]
        try:
            allowed, wait = self._reserve(keys=keys, args=[self.attempts, self.window])
        except redis.exceptions.RedisError as exc:
            return self._unavailable(exc)
        if not allowed:
            minutes = max(1, math.ceil(int(wait) / 60))
            log.warning("login refused: too many failed logins for a name or from %s", address)
            return Verdict(
                None,
                429,
                "Too many failed logins for this user name or from this address: try again "
                f"in {minutes} minute{'s' if minutes != 1 else ''}.",
                retry_after=int(wait),
            )
        who = check(name, password)
        if who is None:
            return Verdict(None, 401, "Wrong user name or password.")
        try:
            self._succeeded(keys=keys)
        except redis.exceptions.RedisError as exc:
            return self._unavailable(exc)
        return Verdict(who)

    def _unavailable(self, exc: redis.exceptions.RedisError) -> Verdict:
        # One line per refused login, naming the store (its password masked) and the
        # error's kind, never the form's contents.
        said = str(exc)
        password = urlsplit(self.url).password
        if password:
            said = said.replace(password, "***")
        log.error(
            "login refused: the login throttle's Redis at %s cannot be reached (%s: %s)",
            mask_url_password(self.url),
            type(exc).__name__,
            said,
        )
        return Verdict(
            None,
            503,
            "Logins are unavailable: the store that counts failed logins (Redis) cannot be "
            "reached. Try again later, or tell whoever runs this page.",
        )
