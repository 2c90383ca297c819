"""Serving the review page under a path prefix (``web_root_path``, e.g. ``/tagger``).

Every URL the page writes (links, forms, redirects, images, the style sheet) starts with
the prefix. Requests may arrive with it (a proxy passing the path on as the browser sent
it, or no proxy at all) or without it (a proxy that strips it): ``RootPath`` makes both
look the way ASGI says, ``root_path`` set and ``path`` starting with it, so routes and
static files are found either way. (uvicorn's own ``--root-path`` would prefix every path
again, breaking the first kind of proxy, so `tagger web` leaves it unset.)
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class RootPath:
    """ASGI middleware: ``root_path`` is ``prefix`` and every path starts with it."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.prefix and scope["type"] in ("http", "websocket"):
            scope = dict(scope)
            path: str = scope["path"]
            if not under(path, self.prefix):
                scope["path"] = self.prefix + path
                raw = scope.get("raw_path")
                if raw is not None:
                    scope["raw_path"] = self.prefix.encode("ascii") + raw
            scope["root_path"] = self.prefix
        await self.app(scope, receive, send)


def under(path: str, prefix: str) -> bool:
    """Whether ``path`` is ``prefix`` or below it (``/tagger/x``, never ``/taggerx``)."""
    return not prefix or path == prefix or path.startswith(prefix + "/")


def safe_next(target: str, prefix: str = "") -> str:
    """Where to go after a login: a path on this site, under the page's prefix (never
    another host); the page's home otherwise."""
    home = prefix + "/"
    if not target.startswith("/") or target.startswith(("//", "/\\")):
        return home
    if any(c in target for c in "\r\n\t\\") or not under(target.split("?", 1)[0], prefix):
        return home
    return target
