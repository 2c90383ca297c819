"""`python -m train score-tags`: a run's tags counted against the labels they should have."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from train.cli import cli
from train.score import score_tags

LABELS = (
    "image_id,caption,path,gender,product_type,product_id,image_type\n"
    "MEN-Denim-id_1-01_1_front,c,MEN-Denim-id_1-01_1_front.jpg,MEN,Denim,id_1,front\n"
    "WOMEN-Skirts-id_2-01_1_front,c,WOMEN-Skirts-id_2-01_1_front.jpg,WOMEN,Skirts,id_2,front\n"
    "WOMEN-Dresses-id_3-01_1_front,c,x.jpg,WOMEN,Dresses,id_3,front\n"
)
TAGS = (
    "item_id,gender,gender_score,product_type,product_score,model_version\n"
    "MEN-Denim-id_1-01_1_front,MEN,0.9,Denim,0.8,v1\n"
    "WOMEN-Skirts-id_2-01_1_front,MEN,0.6,Skirts,0.7,v1\n"
    "WOMEN-Dresses-id_3-01_1_front,WOMEN,0.9,Skirts,0.5,v1\n"
)


def test_score_tags_counts_matches_per_head():
    """Gender and product type are counted apart; an item without labels is left out."""
    labels = {"a": ("MEN", "Denim"), "b": ("WOMEN", "Skirts")}
    rows = [
        {"item_id": "a", "gender": "MEN", "product_type": "Denim"},
        {"item_id": "b", "gender": "MEN", "product_type": "Skirts"},
        {"item_id": "c", "gender": "MEN", "product_type": "Skirts"},
    ]
    score = score_tags(rows, labels)
    assert (score.items, score.gender_right, score.product_right) == (2, 1, 2)
    assert score.summary() == (
        "2 of 2 product types and 1 of 2 genders right (1 tagged item without labels left out)"
    )


def test_score_tags_command_reads_tagger_csv(tmp_path: Path):
    """The command reads `tagger tags --format csv` on stdin and prints one summary line."""
    (tmp_path / "labels_front.csv").write_text(LABELS)
    args = ["score-tags", "-", "--labels", str(tmp_path / "labels_front.csv")]
    result = CliRunner().invoke(cli, args, input=TAGS)
    assert result.exit_code == 0, result.output
    assert result.output == "2 of 3 product types and 2 of 3 genders right\n"


def test_score_tags_refuses_other_csv(tmp_path: Path):
    """A CSV without the tag columns, or with no labelled item, is one error line."""
    (tmp_path / "labels_front.csv").write_text(LABELS)
    args = ["score-tags", "-", "--labels", str(tmp_path / "labels_front.csv")]
    result = CliRunner().invoke(cli, args, input="item_id,score\na,1\n")
    assert result.exit_code == 1 and "without column(s) gender, product_type" in result.output
    result = CliRunner().invoke(cli, args, input="item_id,gender,product_type\nzz,MEN,Denim\n")
    assert result.exit_code == 1 and "no tagged item has a row in" in result.output
