"""What every `tagger` command shares: settings, a session factory and the Celery app,
each built on first use by the command that needs it, never at import time."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from tagger.settings import Settings, load_settings

if TYPE_CHECKING:
    from celery import Celery
    from sqlalchemy.orm import Session, sessionmaker


class Context:
    """Lazily built per-command resources (nothing is connected until a command needs it)."""

    def __init__(self) -> None:
        self._settings: Settings | None = None
        self._sessions: sessionmaker[Session] | None = None
        self._app: Celery | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    @property
    def sessions(self) -> sessionmaker[Session]:
        if self._sessions is None:
            from tagger.db import make_engine, make_session_factory

            engine = make_engine(self.settings.database_url)
            # Closed with the command: `run` may serve many commands in one process (tests).
            click.get_current_context().call_on_close(engine.dispose)
            self._sessions = make_session_factory(engine)
        return self._sessions

    @property
    def app(self) -> Celery:
        """The Celery app, for publishing (made without connecting to the broker)."""
        if self._app is None:
            from tagger.celery_app import create_app

            self._app = create_app(self.settings)
            click.get_current_context().call_on_close(self._app.close)
        return self._app


pass_ctx = click.make_pass_decorator(Context, ensure=True)
