"""A request's filter values, checked: each must be one the database knows (a registered
version, a label of one), a number in range, or a word from a fixed list. A value that is
not is refused by name, before any SQL is built, rather than matching nothing quietly.
No web framework here: the values come in as a plain mapping."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from tagger.web.queries import SORTS, SOURCES, Choices, Filters

#: The grid's queues: the review queue (the default) or every tagged item.
QUEUES = ("review", "all")
#: The query-string names the grid reads (anything else is ignored).
NAMES = ("queue", "gender", "product_type", "min_score", "max_score", "version", "job")
NAMES += ("source", "sort")


@dataclass
class Parsed:
    filters: Filters
    #: one message per refused value (the filter is then left out)
    errors: list[str] = field(default_factory=list)
    #: the values as given, for the form to show them again
    values: dict[str, str] = field(default_factory=dict)


def parse_filters(query: Mapping[str, str], choices: Choices) -> Parsed:
    """Filters from the query string ``query``; unusable values are named in ``errors``."""
    values = {n: query.get(n, "").strip() for n in NAMES}
    errors: list[str] = []

    def pick(name: str, allowed: list[str] | tuple[str, ...], what: str) -> str | None:
        value = values[name]
        if not value:
            return None
        if value not in allowed:
            errors.append(f"unknown {what} {_shown(value)}")
            return None
        return value

    def score(name: str) -> float | None:
        value = values[name]
        if not value:
            return None
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not 0.0 <= number <= 1.0:  # also refuses nan
            errors.append(f"{name.replace('_', ' ')} must be a number from 0 to 1")
            return None
        return number

    job = None
    if values["job"]:
        if values["job"].isascii() and values["job"].isdigit() and len(values["job"]) < 10:
            job = int(values["job"])
        else:
            errors.append(f"job must be a job number, got {_shown(values['job'])}")
    queue = pick("queue", QUEUES, "queue") or "review"
    filters = Filters(
        needs_review=queue == "review",
        gender=pick("gender", choices.genders, "gender"),
        product_type=pick("product_type", choices.product_types, "product type"),
        min_score=score("min_score"),
        max_score=score("max_score"),
        model_version=pick("version", choices.versions, "model version"),
        job_id=job,
        source=pick("source", SOURCES, "source"),  # type: ignore[arg-type]
        sort=pick("sort", SORTS, "sort order") or "margin",  # type: ignore[arg-type]
    )
    return Parsed(filters=filters, errors=errors, values=values)


def _shown(value: str) -> str:
    # Quoted and cut short: the message is HTML-escaped by the template, but a long value
    # should not fill the page.
    return repr(value if len(value) <= 40 else value[:40] + "...")
