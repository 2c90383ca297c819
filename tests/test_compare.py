"""The comparison's statistics (tagger.compare), from plain lists: no services."""

from __future__ import annotations

import json

import pytest

from tagger.compare import (
    PairCount,
    accuracy,
    agreement,
    build_report,
    confusion,
    confusion_table,
    headline,
    per_class_agreement,
    report_tables,
    worse_on_labels,
)

BASE = ["Dresses", "Dresses", "Pants", "Pants", "Pants", "Shorts"]
CAND = ["Dresses", "Pants", "Pants", "Pants", "Shorts", "Shorts"]


def test_agreement_counts_the_items_both_versions_gave_one_class():
    """4 of 6 items get the same class from both versions."""
    assert agreement(confusion(BASE, CAND)) == (6, 4)
    assert agreement(confusion([], [])) == (0, 0)


def test_per_class_agreement_follows_the_baselines_classes_in_label_order():
    """Per class of the baseline, in its label order first, then any other by name."""
    rows = per_class_agreement(confusion(BASE, CAND), order=["Shorts", "Pants", "Tees"])
    assert rows == [
        {"class": "Shorts", "n": 1, "agree": 1, "agreement": 1.0},
        {"class": "Pants", "n": 3, "agree": 2, "agreement": pytest.approx(2 / 3)},
        {"class": "Dresses", "n": 2, "agree": 1, "agreement": 0.5},
    ]


def test_confusion_table_is_square_over_every_class_seen_with_the_diagonal_agreeing():
    """Rows are the baseline's classes, columns the candidate's; a class only one side
    gave is in both, so the diagonal holds the agreement."""
    table = confusion_table(confusion(BASE, CAND), ["Dresses", "Pants"], ["Dresses"])
    assert table["rows"] == table["columns"] == ["Dresses", "Pants", "Shorts"]
    assert table["counts"] == [[1, 1, 0], [0, 2, 1], [0, 0, 1]]
    diagonal = sum(table["counts"][i][i] for i in range(3))
    assert diagonal == agreement(confusion(BASE, CAND))[1]


def test_weights_count_as_that_many_items_and_lists_must_align():
    """A weighted pair counts n times; misaligned lists are refused."""
    assert confusion(["a", "b"], ["a", "a"], [3, 2]) == {("a", "a"): 3, ("b", "a"): 2}
    with pytest.raises(ValueError):
        confusion(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        accuracy(["a"], [])


def test_accuracy_skips_unlabelled_items():
    """Only items with a truth count; None is no label."""
    assert accuracy(["a", "b", "c", "a"], ["a", None, "b", "a"]) == (3, 2)
    assert accuracy(["a"], [None]) == (0, 0)


def _counts() -> list[PairCount]:
    # 10 items: gender agrees on 9, product on 7; 4 labelled (3 on product, 4 on gender).
    return [
        PairCount(("WOMEN", "Dresses"), ("WOMEN", "Dresses"), ("WOMEN", "Dresses"), 2),
        PairCount(("WOMEN", "Dresses"), ("WOMEN", "Dresses"), (None, None), 3),
        PairCount(("MEN", "Pants"), ("MEN", "Pants"), (None, None), 2),
        PairCount(("MEN", "Pants"), ("MEN", "Shorts"), ("MEN", None), 1),
        PairCount(("MEN", "Shorts"), ("WOMEN", "Pants"), ("WOMEN", "Pants"), 1),
        PairCount(("MEN", "Pants"), ("MEN", "Dresses"), (None, None), 1),
    ]


def test_report_figures_from_counts():
    """Agreement per head and class, the confusion and both versions' accuracy on the
    labelled items, exactly; the report is JSON as stored."""
    report = build_report(
        _counts(),
        baseline="v1",
        candidate="v2",
        classes={"gender": ["MEN", "WOMEN"], "product": ["Dresses", "Pants", "Shorts"]},
        sampled=12,
        failed=1,
    )
    assert json.loads(json.dumps(report)) == report
    assert report["items"] == {"sampled": 12, "compared": 10, "candidate_failed": 1, "labelled": 4}
    gender, product = report["heads"]["gender"], report["heads"]["product"]
    assert (gender["n"], gender["agree"], gender["agreement"]) == (10, 9, 0.9)
    assert (product["n"], product["agree"], product["agreement"]) == (10, 7, 0.7)
    assert [(c["class"], c["n"], c["agree"]) for c in product["classes"]] == [
        ("Dresses", 5, 5),
        ("Pants", 4, 2),
        ("Shorts", 1, 0),
    ]
    assert report["confusion"]["product"] == {
        "rows": ["Dresses", "Pants", "Shorts"],
        "columns": ["Dresses", "Pants", "Shorts"],
        "counts": [[5, 0, 0], [1, 2, 1], [0, 1, 0]],
    }
    human = report["human"]
    # gender: 4 labelled; v1 right on 3 (missed the MEN->WOMEN one), v2 on all 4
    assert human["gender"]["n"] == 4
    assert human["gender"]["baseline"] == {"correct": 3, "accuracy": 0.75}
    assert human["gender"]["candidate"] == {"correct": 4, "accuracy": 1.0}
    # product: 3 labelled; v1 right on the 2 dresses, v2 on all 3
    assert (human["product"]["n"], human["product"]["baseline"]["correct"]) == (3, 2)
    assert human["product"]["candidate"]["correct"] == 3
    assert worse_on_labels(report) == []
    line = headline(report)
    assert "agreement gender 90.0%, product 70.0%" in line and "v1 75.0% / v2 100.0%" in line


def test_worse_on_labels_names_each_head_the_candidate_loses():
    """Swapping the two versions turns the candidate's gains into reasons to refuse it."""
    swapped = [PairCount(c.candidate, c.baseline, c.label, c.n) for c in _counts()]
    report = build_report(swapped, baseline="v2", candidate="v1", classes={}, sampled=10)
    assert worse_on_labels(report) == [
        "gender: 3 of 4 labelled items right against 4",
        "product: 2 of 3 labelled items right against 3",
    ]


def test_no_labels_means_no_figure_and_nothing_worse():
    """Without labelled items the accuracies are None (not 0) and nothing is worse."""
    unlabelled = [PairCount(c.baseline, c.candidate, (None, None), c.n) for c in _counts()]
    report = build_report(unlabelled, baseline="v1", candidate="v2", classes={}, sampled=10)
    assert report["human"]["product"] == {
        "n": 0,
        "baseline": {"correct": 0, "accuracy": None},
        "candidate": {"correct": 0, "accuracy": None},
    }
    assert worse_on_labels(report) == [] and headline(report).endswith("no labelled items")
    empty = build_report([], baseline="v1", candidate="v2", classes={}, sampled=0)
    assert empty["heads"]["gender"]["agreement"] is None


def test_report_tables_have_a_row_per_head_class_and_confusion_row():
    """The printed tables: one row per head, per baseline class, per confusion row."""
    report = build_report(
        _counts(), baseline="v1", candidate="v2", classes={"product": ["Pants"]}, sampled=10
    )
    (_, cols, heads), (_, _, classes), (_, matrix_cols, matrix) = report_tables(report)
    assert [r["head"] for r in heads] == ["gender", "product"]
    assert cols[-2:] == ["v1 right", "v2 right"] and heads[1]["v2 right"] == "3 of 3 (100.0%)"
    assert len(classes) == 2 + 3
    assert matrix_cols[1:] == ["Pants", "Dresses", "Shorts"] and len(matrix) == 3


def test_heat_map_is_a_valid_png_coloured_by_each_rows_share(tmp_path):
    """The heat map (Pillow) is a whole PNG that grows with the classes; a class all of
    whose items went to one column is coloured with the dark end of the scale there."""
    from PIL import Image

    from tagger.heatmap import SCALE, colour, draw_confusion
    from tagger.png import png_damage

    assert colour(0.0) == SCALE[0] and colour(1.0) == SCALE[-1] and colour(7) == SCALE[-1]
    names = [f"class_{k}" for k in range(12)]
    counts = [[(50 if i == j else i) for j in range(12)] for i in range(12)]
    counts[0] = [0] * 11 + [9]  # class_0: every item went to class_11
    path = draw_confusion(
        tmp_path / "out" / "h.png",
        rows=names,
        columns=names,
        counts=counts,
        title="t",
        row_title="active",
        column_title="candidate",
    )
    data = path.read_bytes()
    assert png_damage(data) is None and not list(path.parent.glob(".*partial"))
    with Image.open(path) as image:
        small = draw_confusion(
            tmp_path / "s.png", rows=names[:2], columns=names[:2], counts=[[1, 0], [0, 1]],
            title="t", row_title="a", column_title="c",
        )  # fmt: skip
        assert image.width > Image.open(small).width and image.height > 300
        assert SCALE[-1] in {c for _, c in image.convert("RGB").getcolors(1 << 16)}
    with pytest.raises(ValueError):
        draw_confusion(
            tmp_path / "x.png", rows=["a"], columns=["a", "b"], counts=[[1]],
            title="t", row_title="a", column_title="c",
        )  # fmt: skip
