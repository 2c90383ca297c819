"""`python -m train`: synthetic catalogues, training, evaluation and model artifacts.

Subcommands: ``synthetic`` (a labelled synthetic catalogue), ``fit`` (train a model into
an artifact folder), ``evaluate`` (figures of an artifact on a labelled set),
``score-tags`` (how many tags a run got right, against the labels) and ``init`` (an
untrained artifact of the real architecture, for pipeline tests). Errors are one
line on stderr with a non-zero exit.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import click

from train.fit import LR_SCHEDULES, FitOptions
from train.model import GENDER_LABELS, PRODUCT_LABELS, ModelConfig

# TensorFlow's C++ start-up chatter drowns the one-line output; set before it is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The option defaults are read from the dataclasses, never retyped: ModelConfig owns the
# architecture's, FitOptions the training's (class attributes are the field defaults).
# --backbone-weights is a string option: "none" stands for ModelConfig's None.
_DEFAULT_WEIGHTS = ModelConfig.backbone_weights or "none"


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
@click.option(
    "--s3-uri",
    help="Also upload it to s3://bucket/prefix/ (endpoint and credentials as for tagger).",
)
def synthetic(out_dir: Path, n: int, seed: int, image_size: int, s3_uri: str | None) -> None:
    """Write a synthetic labelled catalogue (DeepFashion-MultiModal layout) to OUT."""
    from train.synthetic import CATALOGUE_FILE, IMAGES_DIR, LABELS_FILE, generate, upload

    generate(out_dir, n=n, seed=seed, image_size=image_size)
    click.echo(
        f"wrote {n} items ({image_size}px, seed {seed}) to {out_dir}: {LABELS_FILE}, "
        f"{IMAGES_DIR}/, {CATALOGUE_FILE}"
    )
    if s3_uri:
        from tagger.settings import Settings
        from tagger.storage import make_s3_client

        try:
            count = upload(out_dir, s3_uri, make_s3_client(Settings()))
        except Exception as e:
            raise click.ClickException(f"upload to {s3_uri} failed: {e}") from e
        click.echo(f"uploaded {count} objects to {s3_uri}")


@cli.command()
@click.option(
    "--data",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="labels_front.csv (DeepFashion-MultiModal) or a catalogue CSV with gender and "
    "product_type columns.",
)
@click.option(
    "--images",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder the image paths are relative to [default: selected_images/ beside --data, "
    "else the folder of --data].",
)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--image-size", default=ModelConfig.image_size, show_default=True, type=click.IntRange(min=32)
)
@click.option("--epochs", default=FitOptions.epochs, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--batch-size", default=FitOptions.batch_size, show_default=True, type=click.IntRange(min=1)
)
@click.option(
    "--backbone-weights",
    default=_DEFAULT_WEIGHTS,
    show_default=True,
    help="imagenet (downloaded by Keras), none (random init: the whole backbone is "
    "trained), or a local weights file.",
)
# The two flags switch ModelConfig's use_text and train_backbone defaults (True, False).
@click.option("--no-text", is_flag=True, help="Image-only model (no caption input).")
@click.option("--train-backbone", is_flag=True, help="Train all of the backbone.")
@click.option(
    "--fine-tune-layers",
    default=ModelConfig.fine_tune_layers,
    type=click.IntRange(min=0),
    help="Train only the last N backbone layers (BatchNorm stays frozen).",
)
@click.option(
    "--val-split", default=FitOptions.val_split, show_default=True, type=click.FloatRange(0, 1)
)
@click.option(
    "--seed",
    default=FitOptions.seed,
    show_default=True,
    type=int,
    help="Split, weight init, shuffle and augmentation.",
)
@click.option(
    "--deterministic/--no-deterministic",
    default=FitOptions.deterministic,
    show_default=True,
    help="TensorFlow op determinism: the same --seed gives the same model and figures on "
    "the same machine and library versions (0-6% slower measured on CPU).",
)
@click.option(
    "--patience",
    default=FitOptions.patience,
    show_default=True,
    type=click.IntRange(min=1),
    help="Early stopping: epochs without a better validation loss.",
)
@click.option(
    "--learning-rate",
    default=FitOptions.learning_rate,
    show_default=True,
    type=click.FloatRange(min=0),
)
@click.option(
    "--lr-schedule",
    type=click.Choice(LR_SCHEDULES),
    default=FitOptions.lr_schedule,
    show_default=True,
    help="cosine: one warm-up epoch, then decay over --epochs.",
)
@click.option(
    "--caption-dropout",
    default=FitOptions.caption_dropout,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Share of training captions blanked at random, so a text model also tags items "
    "without a caption.",
)
@click.option(
    "--bn-calibration-items",
    default=FitOptions.bn_calibration_items,
    show_default=True,
    type=click.IntRange(min=0),
    help="Recompute BatchNorm statistics from this many un-augmented training items before "
    "each validation pass (0: keep Keras's moving averages).",
)
@click.option(
    "--checkpoint-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the best epoch's weights here [default: a temporary folder].",
)
@click.option("--name", default=None, help="Name recorded in the artifact's metadata.")
def fit(
    data: Path,
    images: Path | None,
    out_dir: Path,
    image_size: int,
    epochs: int,
    batch_size: int,
    backbone_weights: str,
    no_text: bool,
    train_backbone: bool,
    fine_tune_layers: int,
    val_split: float,
    seed: int,
    deterministic: bool,
    patience: int,
    learning_rate: float,
    lr_schedule: str,
    caption_dropout: float,
    bn_calibration_items: int,
    checkpoint_dir: Path | None,
    name: str | None,
) -> None:
    """Train a model on a labelled image folder and write the artifact to OUT."""
    from train.data import DataError, read_labelled
    from train.fit import fit as run_fit

    weights = _weights(backbone_weights)
    if weights is None:
        # A random backbone that stays frozen is a fixed random projection: useless.
        if fine_tune_layers:
            raise click.UsageError(
                "--backbone-weights none trains the whole backbone; --fine-tune-layers only "
                "makes sense with pretrained weights"
            )
        train_backbone = True
    if train_backbone and fine_tune_layers:
        raise click.UsageError("give --train-backbone or --fine-tune-layers, not both")
    try:
        labelled = read_labelled(data, images)
        config = ModelConfig(
            image_size=image_size,
            use_text=not no_text,
            backbone_weights=weights,
            train_backbone=train_backbone,
            fine_tune_layers=fine_tune_layers,
        )
        options = FitOptions(
            epochs=epochs,
            batch_size=batch_size,
            val_split=val_split,
            seed=seed,
            deterministic=deterministic,
            patience=patience,
            learning_rate=learning_rate,
            lr_schedule=lr_schedule,
            caption_dropout=caption_dropout,
            bn_calibration_items=bn_calibration_items,
            checkpoint_dir=checkpoint_dir,
            name=name,
        )
        result = run_fit(labelled, out_dir, config, options, log=click.echo)
    except (DataError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    except Exception as e:
        if weights == "imagenet" and "http" in str(e).lower():
            raise click.ClickException(
                f"could not get the ImageNet weights ({type(e).__name__}: {e}); without "
                "internet use --backbone-weights none or a local weights file"
            ) from e
        raise

    from tagger.artifacts import artifact_fingerprint
    from train.evaluate import format_report

    click.echo(format_report(result.metrics, per_class=False))
    click.echo(
        f"saved artifact {result.artifact} (fingerprint {artifact_fingerprint(result.artifact)})"
        f" in {result.seconds:.0f}s; figures are on the validation split"
    )


@cli.command()
@click.option(
    "--model", "artifact", required=True, type=click.Path(file_okay=False, path_type=Path)
)
@click.option("--data", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--images", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write metrics.json and the confusion-matrix PNGs here.",
)
# fit's batch size: the batches fit evaluated its validation split with.
@click.option(
    "--batch-size", default=FitOptions.batch_size, show_default=True, type=click.IntRange(min=1)
)
def evaluate(
    artifact: Path, data: Path, images: Path | None, out_dir: Path | None, batch_size: int
) -> None:
    """Print (and write) the figures of a model artifact on a labelled set.

    Image-only figures blank every caption (what the worker does for an item without a
    title); image+caption figures are shown beside them for text models.
    """
    from tagger.exceptions import ArtifactError
    from train.data import DataError
    from train.evaluate import evaluate_artifact, format_report, write_report

    try:
        metrics = evaluate_artifact(artifact, data, images, batch_size=batch_size)
    except (DataError, ArtifactError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"{metrics['evaluated_on']}, model {artifact}")
    click.echo(format_report(metrics))
    if out_dir:
        for path in write_report(out_dir, metrics):
            click.echo(f"wrote {path}")


@cli.command("score-tags")
@click.argument("tags", type=click.File("r", encoding="utf-8"))
@click.option(
    "--labels",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="labels_front.csv whose image_id is the tagged item_id (a synthetic catalogue's).",
)
def score_tags(tags, labels: Path) -> None:
    """Count the items of TAGS (`tagger tags --format csv`, - for stdin) tagged right."""
    from train.score import read_labels
    from train.score import score_tags as score

    reader = csv.DictReader(tags)
    missing = {"item_id", "gender", "product_type"} - set(reader.fieldnames or [])
    if missing:
        raise click.ClickException(f"tags CSV without column(s) {', '.join(sorted(missing))}")
    result = score(reader, read_labels(labels))
    if not result.items:
        raise click.ClickException(f"no tagged item has a row in {labels}")
    click.echo(result.summary())


@cli.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--image-size", default=ModelConfig.image_size, show_default=True, type=click.IntRange(min=32)
)
@click.option("--no-text", is_flag=True, help="Image-only model (no caption input).")
@click.option(
    "--backbone-weights",
    default=_DEFAULT_WEIGHTS,
    show_default=True,
    help="imagenet (downloaded by Keras), none, or a local weights file.",
)
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="labels_front.csv: label lists and captions come from it.",
)
# fit's seed: for the same config and labels, init draws the weights fit starts from.
@click.option(
    "--seed", default=FitOptions.seed, show_default=True, type=int, help="Weight-init seed."
)
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

    from tagger.artifacts import artifact_fingerprint, save_artifact
    from train.model import build_model

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
