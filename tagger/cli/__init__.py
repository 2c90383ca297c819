"""The `tagger` command. Each command builds its own settings, engine and clients, hands
them to a use case (tagger.enqueue, tagger.embedded, ...) and shows what it returns: only
this package and tagger.output print, draw progress and choose exit codes.

The commands live by topic: ``admin`` (db, model, worker, beat), ``work`` (import, run,
retag), ``query`` (tags, jobs), ``stats`` (workers and queue); ``context`` holds what they
share.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import click

from tagger.cli import admin, labels, query, review, stats, web, work
from tagger.exceptions import TaggerError
from tagger.settings import Settings, load_settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tagger")
def cli() -> None:
    """Batch auto-tagging of fashion catalogue images (gender + product type)."""


# Each topic module defines its commands on their own; they join the group here.
for command in (
    admin.db,
    admin.model,
    work.import_,
    work.run_file,
    admin.worker,
    admin.beat,
    query.tags,
    query.jobs,
    labels.labels,
    review.review,
    work.retag,
    stats.stats,
    web.web,
):
    cli.add_command(command)


def run(argv: Sequence[str]) -> int:
    """Run the `tagger` command with ``argv`` in this process: it prints what the command
    prints and returns its exit code. Bugs (not our errors, not an unreachable service)
    raise with their traceback."""
    try:
        code = cli.main(args=list(argv), standalone_mode=False, prog_name="tagger")
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except Exception as exc:
        # Our own errors and unreachable services (Postgres, Redis, S3) get one line naming
        # the service and its masked URL; anything else is a bug and keeps its traceback.
        from tagger.service_errors import user_error

        failure = user_error(exc, _settings_or_none())
        if failure is None:
            raise
        click.echo(f"error: {failure.message}", err=True)
        return failure.exit_code
    # Commands return nothing; an int is an explicit exit (`--help`, a stalled `jobs watch`).
    return code if isinstance(code, int) else 0


def main() -> None:
    """The `tagger` console script."""
    # Process-wide, so here rather than in `run`: a caller embedding `run` keeps its own.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(run(sys.argv[1:]))


def _settings_or_none() -> Settings | None:
    # The environment the command read; None when it is unusable (that error is shown).
    try:
        return load_settings()
    except TaggerError:
        return None
