"""`python -m train fit / evaluate`: bad input stops before any training with one line;
`python -m train init` saves an untrained artifact.

(The successful fit and evaluate runs, on a folder in the exact DeepFashion-MultiModal
layout, are in test_train_fit.py, so the suite trains only once.)"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
from click.testing import CliRunner

from tagger.artifacts import artifact_fingerprint, read_artifact_info
from tests.train_folders import deepfashion_folder
from train.cli import cli
from train.fit import FitOptions
from train.model import ModelConfig


@pytest.fixture(scope="module")
def deepfashion(tmp_path_factory) -> Path:
    return deepfashion_folder(tmp_path_factory.mktemp("deepfashion"))


def _fit_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["fit", "--data", str(data), "--out", str(out), "--backbone-weights", "none", *extra]


def test_fit_missing_image_is_one_line_naming_the_row(deepfashion: Path, tmp_path: Path):
    """A missing image stops fit before any training, naming the line and image id."""
    lines = (deepfashion / "labels_front.csv").read_text().splitlines()
    lines[3] = lines[3].replace("-01_1_front.jpg", "-99_1_front.jpg")
    bad = tmp_path / "labels_front.csv"
    bad.write_text("\n".join(lines) + "\n")
    args = _fit_args(bad, tmp_path / "a", "--images", str(deepfashion / "selected_images"))
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "Error: " in result.output and "line 4 (" in result.output
    assert "image file not found" in result.output
    assert not (tmp_path / "a").exists()


def test_fit_unknown_layout_is_refused(tmp_path: Path):
    """A CSV of another shape is refused with the columns it has."""
    (tmp_path / "x.csv").write_text("file,label\na.jpg,Dresses\n")
    result = CliRunner().invoke(cli, _fit_args(tmp_path / "x.csv", tmp_path / "a"))
    assert result.exit_code == 1
    assert "unknown column layout (found: file, label)" in result.output


def test_fit_empty_split_is_refused(deepfashion: Path, tmp_path: Path):
    """A validation share too small for the data is refused, not trained without."""
    args = _fit_args(deepfashion / "labels_front.csv", tmp_path / "a", "--val-split", "0.01")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and "validation split is empty" in result.output


def test_random_backbone_cannot_be_partly_frozen(deepfashion: Path, tmp_path: Path):
    """--backbone-weights none trains the whole backbone; --fine-tune-layers is refused."""
    args = _fit_args(deepfashion / "labels_front.csv", tmp_path / "a", "--fine-tune-layers", "5")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "trains the whole backbone" in result.output


@pytest.mark.slow
def test_init_saves_untrained_artifact_with_labels_from_data(tmp_path: Path):
    """`python -m train init --data` saves a loadable artifact labelled from the CSV."""
    from train.synthetic import generate

    data = generate(tmp_path / "data", n=6, seed=1, image_size=32) / "labels_front.csv"
    out = tmp_path / "art"
    args = ["init", "--out", str(out), "--image-size", "32", "--backbone-weights", "none"]
    result = CliRunner().invoke(cli, [*args, "--data", str(data)])
    assert result.exit_code == 0, result.output
    info = read_artifact_info(out)
    assert artifact_fingerprint(out) in result.output
    rows = data.read_text().splitlines()[1:]
    assert info.gender_labels == sorted({line.split(",")[-4] for line in rows})
    assert info.product_labels == sorted({line.split(",")[-3] for line in rows})


def test_init_refuses_missing_weights_file(tmp_path: Path):
    """A --backbone-weights path that does not exist is a usage error, before any build."""
    result = CliRunner().invoke(
        cli, ["init", "--out", str(tmp_path / "a"), "--backbone-weights", str(tmp_path / "no.h5")]
    )
    assert result.exit_code == 2 and "no such weights file" in result.output


def _defaults(command: str, *required: str) -> dict:
    """The values a command would run with when given only its required options."""
    return cli.commands[command].make_context(command, list(required)).params


def test_cli_defaults_are_the_dataclass_defaults():
    """fit, init and evaluate default to FitOptions' and ModelConfig's values."""
    fit = _defaults("fit", "--data", "labels.csv", "--out", "out")
    options, config = FitOptions(), ModelConfig()
    for field in fields(FitOptions):
        assert fit[field.name] == getattr(options, field.name), field.name
    assert fit["image_size"] == config.image_size
    assert fit["backbone_weights"] == (config.backbone_weights or "none")
    assert fit["no_text"] is (not config.use_text)
    assert fit["train_backbone"] is config.train_backbone
    assert fit["fine_tune_layers"] == config.fine_tune_layers

    init = _defaults("init", "--out", "out")
    assert init["image_size"] == config.image_size and init["seed"] == options.seed
    assert init["backbone_weights"] == (config.backbone_weights or "none")
    evaluate = _defaults("evaluate", "--model", "m", "--data", "labels.csv")
    assert evaluate["batch_size"] == options.batch_size
