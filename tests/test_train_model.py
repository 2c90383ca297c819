"""The trainer's architecture (train/model.py): ModelConfig, the backbone and its weights."""

from __future__ import annotations

import numpy as np
import pytest

from train.model import ModelConfig

GENDERS = ["MEN", "WOMEN"]
PRODUCTS = ["Dresses", "Pants", "Shorts", "Skirts"]
SIZE = 32


def test_model_config_round_trips_through_a_dict():
    """ModelConfig survives to_dict/from_dict; unknown keys are ignored, "none" means None."""
    config = ModelConfig(image_size=64, use_text=False, backbone_weights="none")
    assert config.backbone_weights is None
    assert ModelConfig.from_dict({**config.to_dict(), "format": 1}) == config
    with pytest.raises(ValueError, match="image_size"):
        ModelConfig(image_size=16)


@pytest.mark.slow
def test_local_imagenet_weights_file_normalises_like_imagenet(tmp_path):
    """A local copy of Keras's ImageNet weights gets the normalisation "imagenet" would."""
    import keras

    from train.model import _backbone

    source = keras.applications.EfficientNetB0(
        include_top=False, weights=None, input_shape=(SIZE, SIZE, 3)
    )
    norm = next(x for x in source.layers if isinstance(x, keras.layers.Normalization))
    # What Keras's weight file holds: the std-dev stored as the variance (TF issue 49930).
    norm.adapt_mean.assign([0.485, 0.456, 0.406])
    norm.adapt_variance.assign([0.229, 0.224, 0.225])
    weights = tmp_path / "notop.weights.h5"
    source.save_weights(weights)

    loaded = _backbone(SIZE, str(weights))
    norm2 = next(x for x in loaded.layers if isinstance(x, keras.layers.Normalization))
    np.testing.assert_allclose(norm2.adapt_variance.numpy(), np.square([0.229, 0.224, 0.225]))
    np.testing.assert_allclose(np.ravel(norm2.variance), np.square([0.229, 0.224, 0.225]))
    np.testing.assert_array_equal(loaded.get_weights()[-1], source.get_weights()[-1])


@pytest.mark.slow
def test_backbone_frozen_unless_fine_tuned():
    """The backbone is frozen by default; fine_tune_layers unfreezes only its tail, not BN."""
    import keras

    from train.model import BACKBONE, build_model

    def build(**options):
        config = ModelConfig(image_size=SIZE, use_text=False, backbone_weights=None, **options)
        return build_model(config, gender_labels=GENDERS, product_labels=PRODUCTS)

    assert build().get_layer(BACKBONE).trainable_weights == []
    layers = build(fine_tune_layers=8).get_layer(BACKBONE).layers
    trainable = [x for x in layers if x.trainable_weights]
    assert trainable and all(x in layers[-8:] for x in trainable)
    assert not any(isinstance(x, keras.layers.BatchNormalization) for x in trainable)
