"""BatchNorm recalibration ("precise BN") before every validation pass.

Why: a BatchNormalization layer normalises with the current batch's statistics while
training but with *moving averages* at inference. Those averages trail the weights by
about ``1 / (1 - momentum)`` steps (100 at Keras's default 0.99). On a short run from a
random backbone, the weights move faster than that, so validation and the saved model
normalise every layer with stale statistics: the validation loss jumps about and can rise
while the training loss falls, and the early-stopping checkpoint is picked on noise.

The fix (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021, section 3): before each
validation pass, recompute the statistics of every layer that trains them from a few
un-augmented training batches with the weights as they are now, averaged over the batches
(population variance = mean of the batch variances + variance of the batch means). Layers
that do not update statistics while training (a frozen pretrained backbone, called with
``training=False``) are left exactly as they were.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np


def batchnorm_layers(model: Any) -> list[Any]:
    """Every BatchNormalization layer of ``model``, nested models included."""
    from keras import layers

    found: list[Any] = []
    stack = [model]
    while stack:
        layer = stack.pop()
        if isinstance(layer, layers.BatchNormalization):
            found.append(layer)
        stack.extend(getattr(layer, "layers", []))
    return found


class Recalibrator:
    """Recomputes a model's BatchNorm moving statistics from input batches.

    The forward pass is traced once (with momentum 0, so each pass leaves a layer's moving
    statistics equal to its batch statistics) and reused for every call.
    """

    def __init__(self, model: Any) -> None:
        import tensorflow as tf

        self.model = model
        self.layers = batchnorm_layers(model)
        self._forward = tf.function(lambda inputs: model(inputs, training=True))

    def __call__(self, batches: Iterable[Any]) -> int:
        """Recalibrate from ``batches`` (input dicts or ``(inputs, labels)`` pairs).

        Returns the number of batches used; with none, nothing changes.
        """
        momenta = [layer.momentum for layer in self.layers]
        means: list[list[np.ndarray]] = [[] for _ in self.layers]
        variances: list[list[np.ndarray]] = [[] for _ in self.layers]
        used = 0
        try:
            for layer in self.layers:
                layer.momentum = 0.0  # read when the forward pass is traced (first call)
            for batch in batches:
                inputs = batch[0] if isinstance(batch, tuple) else batch
                self._forward(inputs)
                used += 1
                for i, layer in enumerate(self.layers):
                    means[i].append(layer.moving_mean.numpy())
                    variances[i].append(layer.moving_variance.numpy())
        finally:
            for layer, momentum in zip(self.layers, momenta, strict=True):
                layer.momentum = momentum
        if not used:  # no forward pass ran: the statistics are untouched
            return 0
        for i, layer in enumerate(self.layers):
            m = np.stack(means[i])
            var = np.stack(variances[i]).mean(axis=0) + m.var(axis=0)
            layer.moving_mean.assign(m.mean(axis=0).astype(m.dtype))
            layer.moving_variance.assign(var.astype(m.dtype))
        return used


def recalibrate_callback(recalibrator: Recalibrator, batches: Any):
    """A Keras callback that recalibrates before every evaluation inside ``fit``.

    ``on_test_begin`` (not ``on_epoch_end``): Keras runs the validation pass before the
    epoch-end callbacks, and the checkpoint saved at epoch end then holds the statistics
    that validation used.
    """
    import keras

    class RecalibrateBatchNorm(keras.callbacks.Callback):
        def on_test_begin(self, logs=None) -> None:
            recalibrator(batches)

    return RecalibrateBatchNorm()
