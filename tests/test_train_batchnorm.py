"""train.batchnorm: BatchNorm statistics recomputed from training batches before validation."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _model(*, frozen_inner: bool = False):
    """x -> Dense -> BN -> [nested: Dense -> BN] -> Dense; the nested part can be frozen."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inner_in = keras.Input((4,))
    inner_out = layers.BatchNormalization(name="inner_bn")(layers.Dense(3)(inner_in))
    inner = keras.Model(inner_in, inner_out, name="inner")
    if frozen_inner:
        inner.trainable = False
    x = keras.Input((5,), name="x")
    h = layers.BatchNormalization(name="outer_bn")(layers.Dense(4, name="first")(x))
    out = layers.Dense(1, name="out")(inner(h))
    return keras.Model(x, out)


def _batches(n_batches: int = 4, size: int = 8, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(2.0, 3.0, (size, 5)).astype("float32") for _ in range(n_batches)]


def test_finds_nested_batchnorm_layers():
    """Every BatchNormalization layer is found, including those of nested models."""
    from train.batchnorm import batchnorm_layers

    assert {layer.name for layer in batchnorm_layers(_model())} == {"outer_bn", "inner_bn"}


def test_statistics_become_the_population_statistics_of_the_batches():
    """A layer's moving mean/variance become its input's mean/variance over all batches."""
    from train.batchnorm import Recalibrator

    model = _model()
    batches = _batches()
    assert Recalibrator(model)(batches) == len(batches)
    first = model.get_layer("first")
    inputs = np.concatenate([first(b).numpy() for b in batches])
    bn = model.get_layer("outer_bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), inputs.mean(axis=0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.moving_variance.numpy(), inputs.var(axis=0), rtol=1e-3, atol=1e-4)
    assert bn.momentum == pytest.approx(0.99)  # restored after the passes


def test_frozen_layers_and_empty_input_change_nothing():
    """A frozen nested model keeps its statistics; no batches leaves every layer as it was."""
    from train.batchnorm import Recalibrator

    model = _model(frozen_inner=True)
    inner_bn = model.get_layer("inner").get_layer("inner_bn")
    outer_bn = model.get_layer("outer_bn")
    before = inner_bn.moving_mean.numpy().copy(), inner_bn.moving_variance.numpy().copy()
    recalibrate = Recalibrator(model)
    recalibrate(_batches())
    np.testing.assert_array_equal(inner_bn.moving_mean.numpy(), before[0])
    np.testing.assert_array_equal(inner_bn.moving_variance.numpy(), before[1])
    outer = outer_bn.moving_mean.numpy().copy()
    assert not np.allclose(outer, 0.0)  # the trainable one did change
    assert recalibrate([]) == 0
    np.testing.assert_array_equal(outer_bn.moving_mean.numpy(), outer)


def test_validation_inside_fit_uses_recalibrated_statistics():
    """After fit with the callback, the statistics are the batches' under the final weights
    (recomputed before the validation pass, after the last training step)."""
    import keras

    from train.batchnorm import Recalibrator, recalibrate_callback

    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    batches = _batches()
    x = np.concatenate(batches)
    y = x.sum(axis=1, keepdims=True)
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        validation_data=(x[:8], y[:8]),
        verbose=0,
        callbacks=[recalibrate_callback(Recalibrator(model), batches)],
    )
    first = model.get_layer("first")
    inputs = np.concatenate([first(b).numpy() for b in batches])
    bn = model.get_layer("outer_bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), inputs.mean(axis=0), rtol=1e-3, atol=1e-3)
