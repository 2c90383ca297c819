"""`tagger web`: the review page (tagger.web), and `tagger web add-user`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tagger.cli.context import Context, pass_ctx


@click.group("web", invoke_without_command=True)
@click.option("--host", help="Address to listen on (default: TAGGER_WEB_HOST).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: TAGGER_WEB_PORT).")
@click.pass_context
def web(click_ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the review page: current tags in a grid (the review queue first), each item's
    probabilities and label history, and corrections by logged-in users."""
    if click_ctx.invoked_subcommand is not None:
        return
    import sqlalchemy as sa
    import uvicorn

    from tagger.db import make_engine
    from tagger.web.app import create_app

    ctx = click_ctx.ensure_object(Context)
    settings = ctx.settings
    # Reach the database (and its review schema) before listening: an unreachable one is
    # the usual one-line error and exit code, not a page of errors on the first request.
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT needs_review FROM current_tags WHERE false"))
    finally:
        engine.dispose()
    host = host or settings.web_host
    port = port or settings.web_port
    if not (settings.web_users_file or settings.web_auth_header):
        click.echo("no users configured (TAGGER_WEB_USERS_FILE): the page is read-only", err=True)
    # The page's own URLs start with TAGGER_WEB_ROOT_PATH; create_app serves it with or
    # without the prefix on incoming paths (tagger.web.paths), so it is not given to uvicorn
    # as well: uvicorn's root_path would prefix paths that already carry it a second time.
    click.echo(f"tagger web on http://{host}:{port}{settings.web_root_path}/", err=True)
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
    )


@web.command("add-user")
@click.argument("name")
@click.option(
    "--users-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The users file (default: TAGGER_WEB_USERS_FILE).",
)
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input (scripts) instead of "
    "prompting for it.",
)
@pass_ctx
def add_user(ctx: Context, name: str, users_file: Path | None, password_stdin: bool) -> None:
    """Add NAME to the users file, with a password asked for twice (not echoed)."""
    from tagger.web.auth import add_user as append_user

    path = users_file or ctx.settings.web_users_file
    if path is None:
        raise click.UsageError("set TAGGER_WEB_USERS_FILE or pass --users-file")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    append_user(path, name, password)
    click.echo(f"added {name} to {path}", err=True)
