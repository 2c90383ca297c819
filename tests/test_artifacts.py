"""The model artifact format (save, read, check, fingerprint) and fetching it from S3."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pytest

from tagger.artifact_cache import resolve_artifact
from tagger.artifacts import artifact_fingerprint, read_artifact_info
from tagger.exceptions import ArtifactError
from tagger.storage import iter_objects
from train.model import ModelConfig

GENDERS = ["MEN", "WOMEN"]
PRODUCTS = ["Dresses", "Pants", "Shorts", "Skirts"]
SIZE = 32


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """An untrained text+image model and the artifact folder it was saved to."""
    from tagger.artifacts import save_artifact
    from train.model import build_model

    config = ModelConfig(image_size=SIZE, use_text=True, backbone_weights=None)
    model = build_model(
        config,
        gender_labels=GENDERS,
        product_labels=PRODUCTS,
        captions=["The lady wears a red dress.", "The gentleman wears blue pants."],
    )
    path = save_artifact(
        model,
        tmp_path_factory.mktemp("artifact") / "m",
        config=config,
        gender_labels=GENDERS,
        product_labels=PRODUCTS,
        metrics={"gender_accuracy": np.float32(0.5)},
        name="test",
    )
    return model, path


def _fake_artifact(path: Path, **overrides) -> Path:
    """An artifact folder with valid JSON files and a stand-in model.keras (no TensorFlow)."""
    path.mkdir(parents=True, exist_ok=True)
    files = {
        "labels.json": json.dumps({"gender": GENDERS, "product": PRODUCTS}),
        "config.json": json.dumps({"image_size": SIZE, "use_text": True}),
        "metadata.json": json.dumps({"created_at": "2026-01-01T00:00:00+00:00"}),
        "model.keras": "not really a model",
        **overrides,
    }
    for name, text in files.items():
        if text is not None:
            (path / name).write_text(text)
    return path


@pytest.mark.slow
def test_artifact_files_describe_the_model(built):
    """labels, config, metadata and metrics are readable without loading the model."""
    _, path = built
    info = read_artifact_info(path)
    assert info.labels == {"gender": GENDERS, "product": PRODUCTS}
    assert (info.image_size, info.uses_text) == (SIZE, True)
    assert ModelConfig.from_dict(info.config).backbone_weights is None
    assert info.metadata["name"] == "test" and info.metadata["tensorflow_version"]
    assert info.metrics == {"gender_accuracy": 0.5}
    assert len(artifact_fingerprint(path)) == 12


@pytest.mark.slow
def test_save_takes_a_plain_mapping_as_config(built, tmp_path):
    """A dict config is saved like the trainer's ModelConfig (no train type needed)."""
    from tagger.artifacts import save_artifact

    model, path = built
    as_dict = ModelConfig(image_size=SIZE, backbone_weights=None).to_dict()
    again = save_artifact(
        model, tmp_path / "d", config=as_dict, gender_labels=GENDERS, product_labels=PRODUCTS
    )
    assert read_artifact_info(again).config == read_artifact_info(path).config


@pytest.mark.slow
def test_label_count_must_match_the_heads(built, tmp_path):
    """Saving or loading with a label list that does not fit a head is an ArtifactError."""
    from tagger.artifacts import save_artifact
    from tagger.model import load_model

    model, path = built
    with pytest.raises(ArtifactError, match="product"):
        save_artifact(
            model, tmp_path / "x", config={"image_size": SIZE}, gender_labels=GENDERS,
            product_labels=PRODUCTS[:2],
        )  # fmt: skip
    broken = shutil.copytree(path, tmp_path / "broken")
    (broken / "labels.json").write_text(json.dumps({"gender": GENDERS, "product": ["A", "B"]}))
    with pytest.raises(ArtifactError, match="labels"):
        load_model(broken, version="x")


@pytest.mark.parametrize("missing", ["model.keras", "labels.json", "config.json", "metadata.json"])
def test_read_artifact_info_names_the_missing_file(tmp_path, missing):
    """An incomplete artifact raises ArtifactError naming the missing file."""
    path = _fake_artifact(tmp_path / "a", **{missing: None})
    with pytest.raises(ArtifactError, match=missing.replace(".", r"\.")):
        read_artifact_info(path)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("labels.json", "{not json"),
        ("labels.json", json.dumps({"gender": GENDERS})),
        ("labels.json", json.dumps({"gender": ["MEN", "MEN"], "product": PRODUCTS})),
        ("config.json", json.dumps({"use_text": True})),
    ],
)
def test_read_artifact_info_names_the_invalid_file(tmp_path, name, text):
    """Unreadable or inconsistent JSON raises ArtifactError naming the file."""
    path = _fake_artifact(tmp_path / "a", **{name: text})
    with pytest.raises(ArtifactError, match=name.replace(".", r"\.")):
        read_artifact_info(path)


CALIBRATION = {
    "method": "softmax_temperature",
    "bins": 15,
    "fitted_on": "validation split",
    "heads": {
        "gender": {"temperature": 1.5, "ece_before": 0.2, "ece_after": 0.05, "items": 40},
        "product": {"temperature": 2.5, "ece_before": 0.3, "ece_after": 0.04, "items": 40},
    },
    "uncaptioned": {
        "product": {"temperature": 4.0, "ece_before": 0.4, "ece_after": 0.1, "items": 40},
    },
}


def test_artifact_without_calibration_reads_as_uncalibrated(tmp_path):
    """calibration.json is optional: an artifact without it has calibration None."""
    assert read_artifact_info(_fake_artifact(tmp_path / "a")).calibration is None


def _with_applied(calibration: dict) -> dict:
    """A calibration.json written before the guard, as to_dict writes it now: each head's
    temperature marked applied (as it always was then)."""
    out = dict(calibration)
    for key in ("heads", "uncaptioned"):
        out[key] = {h: {**p, "applied": True} for h, p in calibration[key].items()}
    return out


def test_artifact_calibration_is_read(tmp_path):
    """calibration.json is read into ArtifactInfo.calibration, parameters intact; one
    written before the guard has every temperature applied."""
    path = _fake_artifact(tmp_path / "a", **{"calibration.json": json.dumps(CALIBRATION)})
    calibration = read_artifact_info(path).calibration
    assert calibration is not None and calibration.to_dict() == _with_applied(CALIBRATION)


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        json.dumps({**CALIBRATION, "method": "isotonic"}),
        json.dumps({**CALIBRATION, "heads": {"colour": {"temperature": 1.0}}}),
        json.dumps({**CALIBRATION, "uncaptioned": {"colour": {"temperature": 1.0}}}),
    ],
)
def test_bad_calibration_is_an_artifact_error(tmp_path, text):
    """A malformed calibration.json, or one for an unknown head, names the file."""
    path = _fake_artifact(tmp_path / "a", **{"calibration.json": text})
    with pytest.raises(ArtifactError, match=r"calibration\.json"):
        read_artifact_info(path)


def test_fingerprint_covers_calibration_only_when_there_is_one(tmp_path):
    """Adding or changing calibration.json changes the id; without it the id is as before."""
    plain = artifact_fingerprint(_fake_artifact(tmp_path / "a"))
    path = _fake_artifact(tmp_path / "b", **{"calibration.json": json.dumps(CALIBRATION)})
    calibrated = artifact_fingerprint(path)
    assert calibrated != plain
    changed = {**CALIBRATION, "method": "sigmoid_temperature"}
    (path / "calibration.json").write_text(json.dumps(changed))
    assert artifact_fingerprint(path) not in (plain, calibrated)
    (path / "calibration.json").unlink()
    assert artifact_fingerprint(path) == plain


@pytest.mark.slow
def test_save_writes_calibration_and_resave_without_drops_it(built, tmp_path):
    """save_artifact stores a given calibration; saving again without one removes it."""
    from tagger.artifacts import save_artifact
    from tagger.calibration import Calibration

    model, _ = built
    common = dict(config={"image_size": SIZE}, gender_labels=GENDERS, product_labels=PRODUCTS)
    path = save_artifact(
        model, tmp_path / "c", calibration=Calibration.from_dict(CALIBRATION), **common
    )
    assert read_artifact_info(path).calibration.to_dict() == _with_applied(CALIBRATION)
    save_artifact(model, path, **common)
    assert read_artifact_info(path).calibration is None


REVIEW = {
    "target_precision": 0.95,
    "fitted_on": "validation split, 40 items",
    "product": {"Dresses": 0.2, "Pants": 0.0, "Shorts": 0.35, "Skirts": 1.000001},
    "gender": {"MEN": 0.7, "WOMEN": 0.65},
}


def test_artifact_review_is_read(tmp_path):
    """review.json is read into ArtifactInfo.review; without it, review is None."""
    assert read_artifact_info(_fake_artifact(tmp_path / "a")).review is None
    path = _fake_artifact(tmp_path / "b", **{"review.json": json.dumps(REVIEW)})
    review = read_artifact_info(path).review
    assert review is not None
    assert (review.product, review.gender) == (REVIEW["product"], REVIEW["gender"])
    assert review.target_precision == 0.95 and review.fitted_on == REVIEW["fitted_on"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "JSON"),
        (json.dumps([1]), "object"),
        (json.dumps({**REVIEW, "target_precision": 0}), "target_precision"),
        (json.dumps({**REVIEW, "product": {"Dresses": -1}}), "Dresses"),
        (json.dumps({**REVIEW, "product": {"Hats": 0.2}}), "unknown classes"),
        (json.dumps({**REVIEW, "gender": {"UNISEX": 0.2}}), "unknown classes"),
    ],
)
def test_bad_review_is_an_artifact_error(tmp_path, text, message):
    """A malformed review.json, or one naming a class the model does not have, is an
    ArtifactError naming the file."""
    path = _fake_artifact(tmp_path / "a", **{"review.json": text})
    with pytest.raises(ArtifactError, match=message) as caught:
        read_artifact_info(path)
    assert "review.json" in str(caught.value)


def test_fingerprint_covers_review_only_when_there_is_one(tmp_path):
    """Adding or changing review.json changes the id; without it the id is as before,
    with or without calibration.json."""
    calibrated = {"calibration.json": json.dumps(CALIBRATION)}
    for i, extra in enumerate(({}, calibrated)):
        plain = artifact_fingerprint(_fake_artifact(tmp_path / f"a{i}", **extra))
        path = _fake_artifact(tmp_path / f"b{i}", **extra, **{"review.json": json.dumps(REVIEW)})
        reviewed = artifact_fingerprint(path)
        assert reviewed != plain
        (path / "review.json").write_text(json.dumps({**REVIEW, "target_precision": 0.9}))
        assert artifact_fingerprint(path) not in (plain, reviewed)
        (path / "review.json").unlink()
        assert artifact_fingerprint(path) == plain


@pytest.mark.slow
def test_save_writes_review_and_resave_without_drops_it(built, tmp_path):
    """save_artifact stores given review thresholds; saving again without them removes
    the file; thresholds for a class the model lacks are refused."""
    from tagger.artifacts import save_artifact
    from tagger.review import ReviewThresholds

    model, _ = built
    common = dict(config={"image_size": SIZE}, gender_labels=GENDERS, product_labels=PRODUCTS)
    review = ReviewThresholds.from_dict(REVIEW)
    path = save_artifact(model, tmp_path / "r", review=review, **common)
    assert read_artifact_info(path).review == review
    save_artifact(model, path, **common)
    assert read_artifact_info(path).review is None
    bad = ReviewThresholds.from_dict({**REVIEW, "product": {"Hats": 0.1}})
    with pytest.raises(ArtifactError, match="Hats"):
        save_artifact(model, tmp_path / "bad", review=bad, **common)


def test_read_artifact_info_of_missing_folder(tmp_path):
    """A folder that does not exist is an ArtifactError naming it."""
    with pytest.raises(ArtifactError, match="not found"):
        read_artifact_info(tmp_path / "nowhere")


def test_fingerprint_is_stable_and_content_based(tmp_path):
    """Same files give the same 12-hex id; changing the labels changes it."""
    a = _fake_artifact(tmp_path / "a")
    b = _fake_artifact(tmp_path / "b")
    assert artifact_fingerprint(a) == artifact_fingerprint(b)
    assert len(artifact_fingerprint(a)) == 12 and int(artifact_fingerprint(a), 16) >= 0
    (b / "labels.json").write_text(json.dumps({"gender": GENDERS[::-1], "product": PRODUCTS}))
    assert artifact_fingerprint(a) != artifact_fingerprint(b)


def test_resolve_local_path_and_file_uri(tmp_path):
    """Local paths and file:// URIs resolve to the folder itself; a missing one is an error."""
    path = _fake_artifact(tmp_path / "my model")
    assert resolve_artifact(str(path), cache_dir=tmp_path / "cache") == path
    assert resolve_artifact(path.as_uri(), cache_dir=tmp_path / "cache") == path
    with pytest.raises(ArtifactError, match="not found"):
        resolve_artifact(str(tmp_path / "missing"), cache_dir=tmp_path / "cache")


def test_resolve_s3_downloads_once(s3_client, bucket, tmp_path):
    """An s3:// prefix is downloaded once into the cache; a neighbouring prefix is not mixed in."""
    local = _fake_artifact(tmp_path / "src")
    for f in local.iterdir():
        s3_client.upload_file(str(f), bucket, f"models/m1/{f.name}")
    s3_client.put_object(Bucket=bucket, Key="models/m10/labels.json", Body=b"{}")
    uri = f"s3://{bucket}/models/m1"
    cache = tmp_path / "cache"

    path = resolve_artifact(uri, cache_dir=cache, s3_client=s3_client)
    assert path.parent == cache
    assert read_artifact_info(path).labels["product"] == PRODUCTS
    assert artifact_fingerprint(path) == artifact_fingerprint(local)
    with patch.object(s3_client, "download_file") as spy:
        assert resolve_artifact(uri, cache_dir=cache, s3_client=s3_client) == path
    spy.assert_not_called()
    assert [p.name for p in cache.iterdir()] == [path.name]  # no staging folders left


def test_resolve_s3_missing_prefix(s3_client, bucket, tmp_path):
    """An s3:// prefix with no objects (or no bucket) is an ArtifactError."""
    with pytest.raises(ArtifactError, match="no artifact files"):
        resolve_artifact(f"s3://{bucket}/nothing/", cache_dir=tmp_path, s3_client=s3_client)
    with pytest.raises(ArtifactError, match="cannot download"):
        resolve_artifact("s3://no-such-bucket-x/m/", cache_dir=tmp_path, s3_client=s3_client)


def test_resolve_s3_needs_the_configured_client(tmp_path):
    """An s3:// URI without a client is refused, not fetched with a default boto3 client."""
    with (
        patch("boto3.client") as default_client,
        pytest.raises(ValueError, match="make_s3_client"),
    ):
        resolve_artifact("s3://bucket/models/m1/", cache_dir=tmp_path)
    default_client.assert_not_called()
    assert list(tmp_path.iterdir()) == []


def test_iter_objects_pages_through_a_prefix(s3_client, bucket):
    """iter_objects yields every object under the prefix across pages, and nothing else."""
    for key in ("p/a", "p/b", "p/c/d", "q/e"):
        s3_client.put_object(Bucket=bucket, Key=key, Body=key.encode())
    objects = list(iter_objects(s3_client, bucket=bucket, prefix="p/", page_size=1))
    assert [o["Key"] for o in objects] == ["p/a", "p/b", "p/c/d"]
    assert [o["Size"] for o in objects] == [3, 3, 5]


# --- callers fetch s3:// artifacts with the configured client -------------------------


def _upload_fake_artifact(s3_client, bucket: str, tmp_path: Path) -> tuple[Path, str]:
    local = _fake_artifact(tmp_path / "src")
    for f in local.iterdir():
        s3_client.upload_file(str(f), bucket, f"models/m1/{f.name}")
    return local, f"s3://{bucket}/models/m1/"


def test_register_fetches_s3_artifacts_from_the_configured_endpoint(
    session_factory, settings_env, s3_client, bucket, tmp_path
):
    """`model register s3://...` downloads through the settings' S3 endpoint (moto here)."""
    from tagger.registry import register_artifact

    local, uri = _upload_fake_artifact(s3_client, bucket, tmp_path)
    with session_factory.begin() as s:
        version = register_artifact(
            session=s, settings=settings_env, uri=uri, version=None, activate=False
        )
        assert (version.version, version.artifact_uri) == (artifact_fingerprint(local), uri)


def test_worker_fetches_s3_artifacts_from_the_configured_endpoint(
    session_factory, settings_env, s3_client, bucket, tmp_path
):
    """A worker's BatchTagger downloads an s3:// model through the settings' S3 endpoint."""
    from tagger.db import ModelVersion
    from tagger.pipeline import BatchTagger

    local, uri = _upload_fake_artifact(s3_client, bucket, tmp_path)
    version = ModelVersion(version="v1", artifact_uri=uri)
    # The download is real; loading the (stand-in) model and TensorFlow set-up are not.
    with (
        patch("tagger.model.configure_tensorflow"),
        patch("tagger.model.load_model") as load,
    ):
        BatchTagger(settings_env, session_factory).model_for(version)
    (path,), kwargs = load.call_args
    assert kwargs == {"version": "v1"}
    assert path.parent == settings_env.model_cache_dir
    assert artifact_fingerprint(path) == artifact_fingerprint(local)
