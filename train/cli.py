"""`python -m train`: synthetic catalogues and model artifacts.

Subcommands so far: ``synthetic`` (a labelled synthetic catalogue) and ``init`` (an
untrained artifact of the real architecture, for pipeline tests and demos). ``fit`` and
``evaluate`` are added beside them. Errors are one line on stderr with a non-zero exit.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import click

from train.model import GENDER_LABELS, PRODUCT_LABELS

# TensorFlow's C++ start-up chatter drowns the one-line output; set before it is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _weights(value: str) -> str | None:
    """--backbone-weights: "imagenet", "none" or a path to a local weights file."""
    if value.lower() == "none":
        return None
    if value == "imagenet":
        return value
    if not Path(value).is_file():
        raise click.BadParameter(f"no such weights file: {value}", param_hint="--backbone-weights")
    return value


@click.group()
def cli() -> None:
    """Build, train and evaluate tagger models."""


@cli.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--n", "n", required=True, type=click.IntRange(min=1), help="Number of items.")
@click.option("--seed", default=42, show_default=True, type=int)
@click.option("--image-size", default=128, show_default=True, type=click.IntRange(min=16))
def synthetic(out_dir: Path, n: int, seed: int, image_size: int) -> None:
    """Write a synthetic labelled catalogue (DeepFashion-MultiModal layout) to OUT."""
    from train.synthetic import CATALOGUE_FILE, IMAGES_DIR, LABELS_FILE, generate

    generate(out_dir, n=n, seed=seed, image_size=image_size)
    click.echo(
        f"wrote {n} items ({image_size}px, seed {seed}) to {out_dir}: {LABELS_FILE}, "
        f"{IMAGES_DIR}/, {CATALOGUE_FILE}"
    )


@cli.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--image-size", default=224, show_default=True, type=click.IntRange(min=32))
@click.option("--no-text", is_flag=True, help="Image-only model (no caption input).")
@click.option(
    "--backbone-weights",
    default="imagenet",
    show_default=True,
    help="imagenet (downloaded by Keras), none, or a local weights file.",
)
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="labels_front.csv: label lists and captions come from it.",
)
@click.option("--seed", default=42, show_default=True, type=int, help="Weight-init seed.")
@click.option("--name", default=None, help="Name recorded in the artifact's metadata.")
def init(
    out_dir: Path,
    image_size: int,
    no_text: bool,
    backbone_weights: str,
    data: Path | None,
    seed: int,
    name: str | None,
) -> None:
    """Save an UNTRAINED model of the real architecture as an artifact folder."""
    weights = _weights(backbone_weights)
    genders, products, captions = (
        _labels_from(data) if data else (GENDER_LABELS, PRODUCT_LABELS, [])
    )

    import keras

    from tagger.model import artifact_fingerprint, save_artifact
    from train.model import ModelConfig, build_model

    config = ModelConfig(image_size=image_size, use_text=not no_text, backbone_weights=weights)
    keras.utils.set_random_seed(seed)
    try:
        model = build_model(
            config, gender_labels=genders, product_labels=products, captions=captions or None
        )
    except Exception as e:
        if weights == "imagenet":
            raise click.ClickException(
                f"could not get the ImageNet weights ({type(e).__name__}: {e}); without "
                "internet use --backbone-weights none or a local weights file"
            ) from e
        raise click.ClickException(f"could not build the model: {e}") from e
    path = save_artifact(
        model,
        out_dir,
        config=config,
        gender_labels=genders,
        product_labels=products,
        name=name or "untrained",
    )
    click.echo(f"saved untrained artifact {path} (fingerprint {artifact_fingerprint(path)})")


def _labels_from(path: Path) -> tuple[list[str], list[str], list[str]]:
    """Sorted label lists and the captions of a labels CSV (labels_front.csv columns)."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"gender", "product_type"} - set(reader.fieldnames or [])
        if missing:
            raise click.ClickException(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        rows = list(reader)
    genders = sorted({r["gender"] for r in rows if r["gender"]})
    products = sorted({r["product_type"] for r in rows if r["product_type"]})
    if not genders or not products:
        raise click.ClickException(f"{path}: no labelled rows")
    return genders, products, [r.get("caption") or "" for r in rows]


def main() -> None:
    cli(prog_name="python -m train")
