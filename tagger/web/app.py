"""The review page's FastAPI application: ``create_app(settings)`` builds it with its own
engine, S3 client and users; nothing is made at import time.

Pages are rendered on the server (Jinja2, autoescaped) and work without JavaScript.
Anyone who can reach the page may look; correcting a tag needs a user (tagger.web.auth),
and every form carries the session's CSRF token, checked on every POST. After a POST the
browser is redirected (303) to a page to GET, so reloading never submits twice. Failed
logins are throttled through Redis (tagger.web.throttle); every URL the page writes starts
with ``web_root_path`` (tagger.web.paths).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from fastapi import FastAPI, HTTPException
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from tagger.db import make_engine, make_session_factory
from tagger.labels import LabelError, clear_label, set_label
from tagger.settings import Settings
from tagger.storage import S3Client
from tagger.web import auth, images, queries
from tagger.web.params import parse_filters
from tagger.web.paths import RootPath, safe_next
from tagger.web.throttle import LoginThrottle

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
PAGE_SIZE = 48
#: The first page counts the matching rows up to here ("more than 1,000"), no further.
COUNT_CAP = 1000
#: Signed-in sessions last a working day.
SESSION_SECONDS = 8 * 3600
# Images may come from S3's presigned URLs (any host); nothing else leaves the page, no
# script runs, and no other site may frame it.
CSP = (
    "default-src 'self'; img-src 'self' https: http:; style-src 'self'; script-src 'none'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def create_app(settings: Settings, *, s3_client: S3Client | None = None) -> FastAPI:
    """The application over ``settings.database_url``, its failed logins counted in Redis
    at ``settings.broker_url``, its URLs under ``settings.web_root_path``. ``s3_client``
    replaces the one built from the settings (tests)."""
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    s3 = s3_client if s3_client is not None else images.make_presign_client(settings)
    users = auth.Users(settings.web_users_file)
    throttle = LoginThrottle.from_settings(settings)
    root = settings.web_root_path  # every URL the page writes starts with it

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()
        throttle.close()

    app = FastAPI(
        title="tagger review", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.add_middleware(
        SessionMiddleware,
        secret_key=auth.session_secret(settings),
        session_cookie="tagger_session",
        max_age=SESSION_SECONDS,
        path=root or "/",
        same_site="lax",
        https_only=settings.web_secure_cookie,
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, trim_blocks=True
    )
    env.filters["score"] = lambda v: "-" if v is None else f"{float(v):.3f}"
    env.filters["when"] = when
    env.globals["describe"] = describe
    env.globals["root"] = root
    templates = Jinja2Templates(env=env)

    def user_of(request: Request) -> str | None:
        return auth.current_user(request, settings=settings, users=users)

    def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        context.update(
            user=user_of(request),
            can_log_in=auth.can_log_in(settings),
            csrf=auth.csrf_token(request),
            flashes=request.session.pop("flash", []),
        )
        return templates.TemplateResponse(request, name, context, status_code=status)

    def image_src(item_id: str, uri: str) -> str | None:
        if images.is_remote(uri):
            return images.presigned_url(uri, s3_client=s3, seconds=settings.presign_seconds)
        return f"{root}/image?" + urlencode({"id": item_id})

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if response.headers.get("content-type", "").startswith("text/html"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return render(request, "error.html", status=exc.status_code, message=exc.detail)

    @app.get("/")
    def grid(request: Request) -> Response:
        after = request.query_params.get("after") or None
        with sessions() as session:
            choices = queries.filter_choices(session=session)
            parsed = parse_filters(request.query_params, choices)
            page, count = queries.Page(rows=[], next_after=None), None
            if not parsed.errors:
                try:
                    page = queries.grid_page(
                        session=session, filters=parsed.filters, after=after, limit=PAGE_SIZE
                    )
                except queries.CursorError:
                    parsed.errors.append("that page link is damaged or out of date")
                if after is None:  # counted once, on the first page, and only so far
                    count = queries.count_matches(
                        session=session, filters=parsed.filters, cap=COUNT_CAP
                    )
        kept = {k: v for k, v in parsed.values.items() if v}
        for row in page.rows:
            row["src"] = image_src(row["item_id"], row["image_uri"])
        return render(
            request,
            "grid.html",
            status=400 if parsed.errors else 200,
            rows=page.rows,
            choices=choices,
            values=parsed.values,
            errors=parsed.errors,
            count=count,
            cap=COUNT_CAP,
            back=urlencode(kept),
            next_url=f"{root}/?" + urlencode({**kept, "after": page.next_after})
            if page.next_after
            else None,
        )

    @app.get("/item")
    def item(request: Request, id: str = "", back: str = "") -> Response:
        with sessions() as session:
            found = queries.item_detail(session=session, item_id=id)
        if found is None:
            raise HTTPException(404, "There is no such item.")
        src = image_src(found.item_id, found.image_uri)
        return render(request, "item.html", item=found, src=src, back=back)

    @app.get("/image")
    def image(id: str = "") -> Response:
        with sessions() as session:
            uri = queries.image_uri(session=session, item_id=id)
        if uri is None:
            raise HTTPException(404, "There is no such item.")
        if images.is_remote(uri):
            url = images.presigned_url(uri, s3_client=s3, seconds=settings.presign_seconds)
            if url is None:
                raise HTTPException(404, "The item's image cannot be shown.")
            return RedirectResponse(url, status_code=307)
        local = images.read_local(uri, max_bytes=settings.max_image_bytes)
        if local is None:
            raise HTTPException(404, "The item's image cannot be shown.")
        data, kind = local
        return Response(data, media_type=kind, headers={"Cache-Control": "private, max-age=300"})

    async def checked_form(request: Request, *, need_user: bool = True) -> tuple[FormData, str]:
        """The POSTed form, once the CSRF token matches and (unless ``need_user`` is
        False) someone is logged in; 403 otherwise, saying which."""
        form = await request.form()
        user = user_of(request)
        if need_user and user is None:
            raise HTTPException(403, "Log in to correct tags: the page is read-only without.")
        if not auth.csrf_ok(request, form.get("csrf")):
            raise HTTPException(
                403, "The form's security token is missing or out of date: reload the page."
            )
        return form, user or ""

    def back_to(item_id: str, back: str) -> RedirectResponse:
        query = {"id": item_id, **({"back": back} if back else {})}
        return RedirectResponse(f"{root}/item?" + urlencode(query), status_code=303)

    def flash(request: Request, message: str, kind: str = "ok") -> None:
        request.session.setdefault("flash", []).append({"kind": kind, "text": message})

    @app.post("/item/label")
    async def label(request: Request) -> Response:
        form, user = await checked_form(request)
        item_id, back = str(form.get("item_id", "")), str(form.get("back", ""))
        fields = {name: str(form[name]) for name in ("gender", "product_type") if form.get(name)}

        def store() -> None:
            with sessions.begin() as session:
                set_label(session=session, item_id=item_id, by=user, **fields)

        try:
            await run_in_threadpool(store)
        except LabelError as exc:
            flash(request, str(exc), "error")
        else:
            said = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in fields.items())
            flash(request, f"Saved: {said} (by {user}).")
        return back_to(item_id, back)

    @app.post("/item/clear")
    async def clear(request: Request) -> Response:
        form, user = await checked_form(request)
        item_id, back = str(form.get("item_id", "")), str(form.get("back", ""))

        def remove() -> None:
            with sessions.begin() as session:
                clear_label(session=session, item_id=item_id, by=user)

        try:
            await run_in_threadpool(remove)
        except LabelError as exc:
            flash(request, str(exc), "error")
        else:
            flash(request, f"Label removed (by {user}): the model's tag shows again.")
        return back_to(item_id, back)

    @app.get("/login")
    def login_page(request: Request, next: str = "") -> Response:
        target = safe_next(next, root)
        return render(request, "login.html", next=target, error=None, users_file=users.enabled)

    @app.post("/login")
    async def login(request: Request) -> Response:
        form, _ = await checked_form(request, need_user=False)
        target = safe_next(str(form.get("next", "")), root)
        if not users.enabled:
            raise HTTPException(403, "No users are configured: the page is read-only.")
        name, password = str(form.get("name", "")), str(form.get("password", ""))
        address = request.client.host if request.client else "?"
        # Counted in Redis across processes; over the limit, no password is checked.
        verdict = await run_in_threadpool(
            throttle.attempt, name, password, address, users.authenticate
        )
        if verdict.user is None:
            if verdict.status == 401:  # the same answer for a wrong name or password
                log.info("failed login from %s", address)
            shown = {"next": target, "error": verdict.message, "users_file": True}
            page = render(request, "login.html", verdict.status, **shown)
            if verdict.retry_after:
                page.headers["Retry-After"] = str(verdict.retry_after)
            return page
        auth.log_in(request, verdict.user)
        return RedirectResponse(target, status_code=303)

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        await checked_form(request, need_user=False)
        request.session.clear()
        return RedirectResponse(f"{root}/", status_code=303)

    @app.get("/healthz")
    def healthz() -> Response:
        return PlainTextResponse("ok")

    app.add_middleware(RootPath, prefix=root)  # outermost: routes see the prefix first
    return app


def when(value: object) -> str:
    """A timestamp to the second (SQLite may hand back text: shown as it is)."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    return "" if value is None else str(value)


def describe(fields: dict | None) -> str:
    """A label (as label_changes stores it) in words."""
    shown = [f"{k.replace('_', ' ')} {v}" for k, v in (fields or {}).items() if v is not None]
    return ", ".join(shown) or "no label"
