"""Inference (tagger/model.py): build -> save_artifact -> load_model -> predict. The artifact
format itself is tested in test_artifacts.py, the trainer's architecture in
test_train_model.py."""

from __future__ import annotations

from unittest.mock import patch

import numpy as np
import pytest

from tagger.artifacts import read_artifact_info
from train.model import ModelConfig

GENDERS = ["MEN", "WOMEN"]
PRODUCTS = ["Dresses", "Pants", "Shorts", "Skirts"]
SIZE = 32
CAPTIONS = ["The lady wears a red dress.", "The gentleman wears blue pants.", None, "", "Shorts"]


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def _build(use_text: bool = True):
    from train.model import build_model

    config = ModelConfig(image_size=SIZE, use_text=use_text, backbone_weights=None)
    model = build_model(
        config,
        gender_labels=GENDERS,
        product_labels=PRODUCTS,
        captions=[c for c in CAPTIONS if c],
    )
    return config, model


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """An untrained text+image model, its artifact folder and the model loaded from it."""
    from tagger.artifacts import save_artifact
    from tagger.model import load_model

    config, model = _build()
    path = save_artifact(
        model,
        tmp_path_factory.mktemp("artifact") / "m",
        config=config,
        gender_labels=GENDERS,
        product_labels=PRODUCTS,
        metrics={"gender_accuracy": np.float32(0.5)},
        name="test",
    )
    return model, path, load_model(path, version="v1")


@pytest.mark.slow
def test_predict_gives_one_prediction_per_row_with_artifact_labels(built):
    """predict returns one Prediction per image, labelled from the artifact's labels.json."""
    _, _, loaded = built
    assert (loaded.version, loaded.image_size, loaded.uses_text) == ("v1", SIZE, True)
    preds = loaded.predict(_images(5), CAPTIONS)
    assert len(preds) == 5
    for p in preds:
        assert p.gender in GENDERS and p.product_type in PRODUCTS
        assert list(p.scores["gender"]) == GENDERS and list(p.scores["product"]) == PRODUCTS
        assert 0.0 <= p.gender_score <= 1.0 and type(p.product_score) is float


@pytest.mark.slow
def test_predict_makes_one_model_call_per_batch(built):
    """A batch of 5 is one predict_on_batch call with named float32 image and string inputs."""
    _, _, loaded = built
    real = loaded.keras_model.predict_on_batch
    with patch.object(loaded.keras_model, "predict_on_batch", wraps=real) as spy:
        loaded.predict(_images(5), CAPTIONS)
    assert spy.call_count == 1
    (inputs,), _ = spy.call_args
    assert set(inputs) == {"image", "caption"}
    # padded to 8 rows (the next power of two) so odd batch lengths reuse a traced graph
    assert inputs["image"].dtype == np.float32 and inputs["image"].shape == (8, SIZE, SIZE, 3)
    assert inputs["image"][:5].max() > 1.0  # raw 0-255 pixels: the backbone rescales itself
    assert not inputs["image"][5:].any()
    assert inputs["caption"].shape == (8, 1)
    assert inputs["caption"][2, 0] == "" and inputs["caption"][0, 0] == CAPTIONS[0]


@pytest.mark.slow
def test_padding_does_not_change_predictions(built):
    """A batch of 3 (padded to 4) tags its images as they are tagged in a batch of 4."""
    _, _, loaded = built
    images = _images(4, seed=5)
    three = loaded.predict(images[:3], CAPTIONS[:3])
    four = loaded.predict(images, CAPTIONS[:4])
    for a, b in zip(three, four[:3], strict=True):
        assert (a.gender, a.product_type) == (b.gender, b.product_type)
        assert a.product_score == pytest.approx(b.product_score, abs=1e-5)


def test_padded_length_is_the_next_power_of_two():
    """Batch lengths round up to powers of two, so few distinct shapes are ever traced."""
    from tagger.model import padded_length

    assert [padded_length(n) for n in (1, 2, 3, 5, 32, 33, 64)] == [1, 2, 4, 8, 32, 64, 64]


@pytest.mark.slow
def test_empty_batch_skips_the_model(built):
    """An empty batch returns [] without calling the model."""
    _, _, loaded = built
    with patch.object(loaded.keras_model, "predict_on_batch") as spy:
        assert loaded.predict(np.zeros((0, SIZE, SIZE, 3), np.uint8), []) == []
    spy.assert_not_called()


@pytest.mark.slow
def test_predict_refuses_wrong_shapes(built):
    """Images of the wrong size, or a caption count that differs, raise ValueError."""
    _, _, loaded = built
    with pytest.raises(ValueError, match="shape"):
        loaded.predict(np.zeros((2, SIZE + 1, SIZE + 1, 3), np.uint8), ["", ""])
    with pytest.raises(ValueError, match="captions"):
        loaded.predict(_images(2), [""])


@pytest.mark.slow
def test_predict_refuses_float_pixels(built):
    """A float batch is refused with its dtype named: models take decoded uint8 pixels."""
    _, _, loaded = built
    with pytest.raises(ValueError, match=r"uint8.*float32"):
        loaded.predict(_images(2).astype(np.float32), ["", ""])


@pytest.mark.slow
def test_round_trip_gives_identical_predictions(built):
    """The in-memory model and the one loaded from its artifact tag a batch identically."""
    from tagger.model import KerasModel

    model, _, loaded = built
    in_memory = KerasModel(model, version="mem", gender_labels=GENDERS, product_labels=PRODUCTS)
    images = _images(6, seed=3)
    captions = ["the lady wears a dress", "pants", None, "", "a skirt", "shorts"]
    assert in_memory.predict(images, captions) == loaded.predict(images, captions)


@pytest.mark.slow
def test_image_only_model(tmp_path):
    """A use_text=False model has only the image input and ignores captions."""
    from tagger.artifacts import save_artifact
    from tagger.model import load_model

    config, model = _build(use_text=False)
    assert [t.name for t in model.inputs] == ["image"]
    path = save_artifact(
        model, tmp_path / "a", config=config, gender_labels=GENDERS, product_labels=PRODUCTS
    )
    assert read_artifact_info(path).uses_text is False
    loaded = load_model(path, version="img")
    assert loaded.uses_text is False
    real = loaded.keras_model.predict_on_batch
    with patch.object(loaded.keras_model, "predict_on_batch", wraps=real) as spy:
        preds = loaded.predict(_images(3), [None, "ignored", None])
    assert len(preds) == 3 and set(spy.call_args.args[0]) == {"image"}


@pytest.mark.slow
def test_configure_tensorflow_is_harmless_on_cpu():
    """configure_tensorflow runs anywhere; without a GPU it leaves the float32 policy."""
    import keras
    import tensorflow as tf

    from tagger.model import configure_tensorflow

    try:
        configure_tensorflow(memory_growth=True, mixed_precision=True)
        expected = "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
        assert keras.mixed_precision.global_policy().name == expected
    finally:
        keras.mixed_precision.set_global_policy("float32")
