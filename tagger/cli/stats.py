"""`tagger stats`: the queue, the live workers and each one's batch metrics."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click

from tagger.cli.context import Context, pass_ctx
from tagger.output import format_option


@click.command("stats")
@format_option
@click.option(
    "--timeout",
    type=click.FloatRange(0.1),
    default=1.0,
    show_default=True,
    help="Seconds to wait for the workers' answers.",
)
@pass_ctx
def stats(ctx: Context, fmt: str, timeout: float) -> None:
    """Queue depth and every live worker (any host): batches, images/s, mean seconds per
    stage (load, fetch, decode, model, write), failures by reason, model version."""
    from tagger.celery_app import queue_depth, worker_metrics
    from tagger.output import render

    depth = queue_depth(ctx.app, queue=ctx.settings.queue)
    workers = worker_metrics(ctx.app, timeout=timeout)
    if fmt == "json":
        listed = [{"worker": name, **reply} for name, reply in sorted(workers.items())]
        click.echo(json.dumps({"queue": asdict(depth), "workers": listed}, indent=2))
    else:
        unacked = "" if depth.unacked is None else f", {depth.unacked} delivered and not acked"
        click.echo(f"queue {depth.queue}: {depth.waiting} waiting{unacked}", err=fmt == "csv")
        if workers:
            rows = [worker_row(name, reply) for name, reply in sorted(workers.items())]
            columns = [c for c in rows[0] if c != "note" or any(r["note"] for r in rows)]
            render(rows, columns=columns, fmt=fmt, title="workers")
    if not workers:
        click.echo(f"no worker answered within {timeout:g} s", err=True)


def worker_row(name: str, reply: dict[str, Any]) -> dict[str, Any]:
    """One worker's reply as a flat row: stage columns hold mean seconds per batch."""
    from tagger.metrics import STAGES

    stages = reply.get("stages") or {}
    failures = reply.get("failures") or {}
    return {
        "worker": name,
        "pool": reply.get("pool"),
        "active": reply.get("active_batches"),
        "batches": reply.get("batches"),
        "images": reply.get("images_tagged"),
        "images/s": reply.get("images_per_second"),
        "batch size": reply.get("batch_size_mean"),
        **{f"{stage} s": stages.get(stage, {}).get("mean_seconds") for stage in STAGES},
        "failures": ", ".join(f"{reason} {n}" for reason, n in failures.items()),
        "model": ", ".join(reply.get("model_versions") or []),
        "runtime": ", ".join(reply.get("runtimes") or []),
        "metrics port": reply.get("port"),
        # a worker of an older tagger (no such command), or one that records no metrics
        "note": reply.get("error") or ("" if reply.get("enabled") else "no metrics"),
    }
