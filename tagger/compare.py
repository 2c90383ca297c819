"""Two model versions' tags on the same items, compared: how often they agree per head
(overall and per class of the baseline, the active version), the confusion between them,
and how often each is right on the items people labelled.

Pure Python over counts, so a comparison over a million items costs what its few thousand
distinct (baseline, candidate, label) combinations cost: ``tagger.shadow`` reads those
counts from the database with one GROUP BY, and tests feed lists. The report is a plain
dict (JSON as stored in ``model_comparisons.report``) that ``headline`` and
``worse_on_labels`` read back, also from a report stored by an older tagger.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: The two heads, and the tag field each one fills.
HEADS = ("gender", "product")

Pairs = Mapping[tuple[str, str], int]


@dataclass(frozen=True)
class PairCount:
    """``n`` items on which the baseline said ``baseline`` (gender, product type), the
    candidate said ``candidate``, and a person's label says ``label`` (None: unlabelled)."""

    baseline: tuple[str, str]
    candidate: tuple[str, str]
    label: tuple[str | None, str | None]
    n: int


def rate(part: int, whole: int) -> float | None:
    """part / whole, None for an empty whole (no figure rather than a made-up 0 or 1)."""
    return round(part / whole, 6) if whole else None


def confusion(
    baseline: Sequence[str], candidate: Sequence[str], weights: Sequence[int] | None = None
) -> Counter[tuple[str, str]]:
    """(baseline class, candidate class) -> items, from two aligned lists of classes."""
    if len(baseline) != len(candidate) or (weights is not None and len(weights) != len(baseline)):
        raise ValueError("baseline, candidate (and weights) must be aligned lists")
    pairs: Counter[tuple[str, str]] = Counter()
    for a, b, w in zip(baseline, candidate, weights or [1] * len(baseline), strict=True):
        pairs[(a, b)] += w
    return pairs


def agreement(pairs: Pairs) -> tuple[int, int]:
    """(items, items on which both gave the same class)."""
    return sum(pairs.values()), sum(n for (a, b), n in pairs.items() if a == b)


def per_class_agreement(pairs: Pairs, order: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Agreement within each class the baseline gave: {class, n, agree, agreement}, in
    ``order`` (the baseline's label list), then any other class seen, by name."""
    n: Counter[str] = Counter()
    agree: Counter[str] = Counter()
    for (a, b), k in pairs.items():
        n[a] += k
        agree[a] += k if a == b else 0
    return [
        {"class": c, "n": n[c], "agree": agree[c], "agreement": rate(agree[c], n[c])}
        for c in ordered(n, order)
    ]


def ordered(seen: Iterable[str], order: Sequence[str]) -> list[str]:
    """The classes ``seen``, in ``order`` first and the rest by name."""
    seen = set(seen)
    return [c for c in dict.fromkeys(order) if c in seen] + sorted(seen - set(order))


def confusion_table(
    pairs: Pairs, rows: Sequence[str], columns: Sequence[str]
) -> dict[str, list[Any]]:
    """The confusion as a matrix: {rows (baseline classes), columns (candidate classes),
    counts (one list per row)}; every class seen on either side is in both, so the
    diagonal is the agreement."""
    seen = {a for a, _ in pairs} | {b for _, b in pairs}
    row_names = ordered(seen, [*rows, *columns])
    col_names = ordered(seen, [*columns, *rows])
    counts = [[int(pairs.get((a, b), 0)) for b in col_names] for a in row_names]
    return {"rows": row_names, "columns": col_names, "counts": counts}


def accuracy(predicted: Sequence[str], truth: Sequence[str | None]) -> tuple[int, int]:
    """(labelled items, of those predicted right); items whose truth is None are skipped."""
    if len(predicted) != len(truth):
        raise ValueError("predicted and truth must be aligned lists")
    labelled = [(p, t) for p, t in zip(predicted, truth, strict=True) if t is not None]
    return len(labelled), sum(p == t for p, t in labelled)


def build_report(
    counts: Iterable[PairCount],
    *,
    baseline: str,
    candidate: str,
    classes: Mapping[str, Sequence[str]],
    sampled: int,
    failed: int = 0,
) -> dict[str, Any]:
    """The comparison of ``candidate`` against ``baseline`` on the items ``counts``
    describe (those both versions tagged). ``classes``: the baseline's label list per head
    (the order of tables); ``sampled``: the items the comparison was run on; ``failed``:
    of those, the items the candidate could not tag."""
    pairs: dict[str, Counter[tuple[str, str]]] = {head: Counter() for head in HEADS}
    right: dict[str, Counter[str]] = {head: Counter() for head in HEADS}
    labelled_items = 0
    for row in counts:
        if any(v is not None for v in row.label):
            labelled_items += row.n
        for i, head in enumerate(HEADS):
            pairs[head][(row.baseline[i], row.candidate[i])] += row.n
            truth = row.label[i]
            if truth is not None:
                right[head]["n"] += row.n
                right[head]["baseline"] += row.n if row.baseline[i] == truth else 0
                right[head]["candidate"] += row.n if row.candidate[i] == truth else 0
    heads: dict[str, Any] = {}
    for head in HEADS:
        n, agree = agreement(pairs[head])
        heads[head] = {
            "n": n,
            "agree": agree,
            "agreement": rate(agree, n),
            "classes": per_class_agreement(pairs[head], classes.get(head, ())),
        }
    human = {
        head: {
            "n": right[head]["n"],
            **{
                who: {
                    "correct": right[head][who],
                    "accuracy": rate(right[head][who], right[head]["n"]),
                }
                for who in ("baseline", "candidate")
            },
        }
        for head in HEADS
    }
    return {
        "baseline": baseline,
        "candidate": candidate,
        "items": {
            "sampled": sampled,
            "compared": heads[HEADS[0]]["n"],
            "candidate_failed": failed,
            "labelled": labelled_items,
        },
        "heads": heads,
        "confusion": {
            head: confusion_table(pairs[head], classes.get(head, ()), classes.get(head, ()))
            for head in HEADS
        },
        "human": human,
    }


@dataclass(frozen=True)
class HeadFigures:
    """One head's headline: agreement, and each version's accuracy on labelled items."""

    head: str
    agreement: float | None
    labelled: int
    baseline_accuracy: float | None
    candidate_accuracy: float | None


def head_figures(report: Mapping[str, Any]) -> list[HeadFigures]:
    heads, human = report.get("heads", {}), report.get("human", {})
    return [
        HeadFigures(
            head=head,
            agreement=heads.get(head, {}).get("agreement"),
            labelled=int(human.get(head, {}).get("n", 0)),
            baseline_accuracy=human.get(head, {}).get("baseline", {}).get("accuracy"),
            candidate_accuracy=human.get(head, {}).get("candidate", {}).get("accuracy"),
        )
        for head in HEADS
    ]


def worse_on_labels(report: Mapping[str, Any]) -> list[str]:
    """The heads on which the candidate got fewer labelled items right than the baseline
    (on the same items): each one is a reason not to roll it out. Empty when it is as
    good or better on both, or when no item of the comparison was labelled."""
    human = report.get("human", {})
    return [
        f"{head}: {h['candidate']['correct']} of {h['n']} labelled items right against "
        f"{h['baseline']['correct']}"
        for head in HEADS
        if (h := human.get(head))
        and h.get("n")
        and h["candidate"]["correct"] < h["baseline"]["correct"]
    ]


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def headline(report: Mapping[str, Any]) -> str:
    """One line: agreement per head over the items compared, and both versions' accuracy
    on the labelled ones (when there are any)."""
    base, cand = report.get("baseline", "?"), report.get("candidate", "?")
    items = report.get("items", {})
    figures = head_figures(report)
    line = f"{cand} against {base} on {items.get('compared', 0):,} items: agreement " + ", ".join(
        f"{f.head} {percent(f.agreement)}" for f in figures
    )
    labelled = [f for f in figures if f.labelled]
    if not labelled:
        return line + "; no labelled items"
    return (
        line
        + f"; on {items.get('labelled', 0):,} labelled items: "
        + ", ".join(
            f"{f.head} {base} {percent(f.baseline_accuracy)} / {cand} "
            f"{percent(f.candidate_accuracy)} ({f.labelled})"
            for f in labelled
        )
    )


def report_tables(report: Mapping[str, Any]) -> list[tuple[str, list[str], list[dict[str, Any]]]]:
    """The report as tables to print, each (title, columns, rows): per head, per class of
    the baseline, and the product-type confusion (baseline rows, candidate columns)."""
    base, cand, items = report["baseline"], report["candidate"], report["items"]

    def right(figures: Mapping[str, Any], n: int) -> str:
        return f"{figures['correct']} of {n} ({percent(figures['accuracy'])})" if n else ""

    heads = []
    for head in HEADS:
        h, people = report["heads"][head], report["human"][head]
        heads.append(
            {
                "head": head,
                "items": h["n"],
                "agreement": percent(h["agreement"]),
                "labelled": people["n"],
                f"{base} right": right(people["baseline"], people["n"]),
                f"{cand} right": right(people["candidate"], people["n"]),
            }
        )
    title = (
        f"{cand} against the active {base}: {items['compared']} of {items['sampled']} items "
        f"tagged by both ({items['candidate_failed']} failed), {items['labelled']} labelled"
    )
    by_class = f"class ({base})"
    classes = [
        {"head": head, by_class: c["class"], "items": c["n"], "agreement": percent(c["agreement"])}
        for head in HEADS
        for c in report["heads"][head]["classes"]
    ]
    product = report["confusion"]["product"]
    corner = f"{base} \\ {cand}"
    matrix = [
        {corner: name, **dict(zip(product["columns"], row, strict=True))}
        for name, row in zip(product["rows"], product["counts"], strict=True)
    ]
    return [
        (title, list(heads[0]), heads),
        ("agreement by class", ["head", by_class, "items", "agreement"], classes),
        (
            "product type: active (rows) x candidate (columns)",
            [corner, *product["columns"]],
            matrix,
        ),
    ]
