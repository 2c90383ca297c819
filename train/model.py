"""The model architecture: the one place it lives (the README's "Training" section describes it).

Pure: builds a Keras model from a :class:`ModelConfig` and label lists; no file I/O
(the artifact format is ``tagger.artifacts``'s job). Keras is imported inside the
functions, so importing this module for the config or the label lists stays cheap (the
service reads artifact configs without paying for TensorFlow).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

# The input and head names are the artifact format's (the service reads them there too);
# re-exported here for the trainer's modules.
from tagger.artifacts import CAPTION_INPUT, GENDER_HEAD, IMAGE_INPUT, PRODUCT_HEAD

if TYPE_CHECKING:
    import keras

#: Labels of the reference dataset (DeepFashion-MultiModal), sorted as training sorts them.
GENDER_LABELS: list[str] = ["MEN", "WOMEN"]
PRODUCT_LABELS: list[str] = [
    "Blouses_Shirts",
    "Cardigans",
    "Denim",
    "Dresses",
    "Graphic_Tees",
    "Jackets_Coats",
    "Jackets_Vests",
    "Leggings",
    "Pants",
    "Rompers_Jumpsuits",
    "Shirts_Polos",
    "Shorts",
    "Skirts",
    "Suiting",
    "Sweaters",
    "Sweatshirts_Hoodies",
    "Tees_Tanks",
]

#: Name of the nested EfficientNetB0 model (``model.get_layer(BACKBONE)`` to (un)freeze it).
BACKBONE = "efficientnetb0"

# EfficientNetB0's stem downsamples by 32; smaller inputs leave no spatial extent.
MIN_IMAGE_SIZE = 32
# An untrained model still needs an adapted vectoriser: an empty vocabulary cannot be
# saved and reloaded reliably, so it is adapted on these words instead.
_PLACEHOLDER_CAPTIONS = ["the lady wears a dress", "the gentleman wears a shirt"]
_IMAGENET_MEAN_RGB = [0.485, 0.456, 0.406]
_IMAGENET_STDDEV_RGB = [0.229, 0.224, 0.225]


@dataclass
class ModelConfig:
    """Hyper-parameters of the architecture; stored in an artifact's config.json.

    The one home of their defaults (``python -m train`` reads them from here). How the
    model is trained, the learning rate included, is ``train.fit.FitOptions``'s.
    """

    image_size: int = 224
    use_text: bool = True
    vocab_size: int = 10_000
    sequence_length: int = 40
    embedding_dim: int = 128
    #: None (random init), "imagenet" (downloaded by Keras) or a local weights file
    backbone_weights: str | None = "imagenet"
    train_backbone: bool = False
    fine_tune_layers: int = 0
    dropout: float = 0.4

    def __post_init__(self) -> None:
        if isinstance(self.backbone_weights, str) and self.backbone_weights.lower() in {
            "",
            "none",
        }:
            self.backbone_weights = None
        if self.image_size < MIN_IMAGE_SIZE:
            raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE}, got {self.image_size}")
        if self.vocab_size < 3 or self.sequence_length < 1 or self.embedding_dim < 1:
            raise ValueError("vocab_size must be >= 3, sequence_length and embedding_dim >= 1")
        if self.fine_tune_layers < 0:
            raise ValueError("fine_tune_layers must be >= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a dict, ignoring unknown keys.

        config.json carries extra fields: ``format``, and ``learning_rate`` in artifacts
        written before it moved to ``FitOptions``.
        """
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def build_model(
    config: ModelConfig,
    *,
    gender_labels: list[str],
    product_labels: list[str],
    captions: list[str] | None = None,
) -> keras.Model:
    """Build the (uncompiled) two-head model.

    Inputs are named: ``"image"`` (S, S, 3) float32 with raw 0-255 pixels and, when
    ``config.use_text``, ``"caption"`` (1,) string. Outputs are a dict of sigmoid
    probabilities keyed ``"gender"`` and ``"product"``, in the order of the label lists.
    ``captions`` (the training captions) adapt the text vectoriser's vocabulary.
    """
    import keras
    from keras import layers

    if not gender_labels or not product_labels:
        raise ValueError("gender_labels and product_labels must not be empty")

    size = config.image_size
    image = keras.Input(shape=(size, size, 3), dtype="float32", name=IMAGE_INPUT)
    inputs: dict[str, keras.KerasTensor] = {IMAGE_INPUT: image}
    features = [_image_branch(image, config)]

    if config.use_text:
        caption = keras.Input(shape=(1,), dtype="string", name=CAPTION_INPUT)
        inputs[CAPTION_INPUT] = caption
        features.append(_text_branch(caption, config, captions))

    x = layers.Concatenate(name="fusion")(features) if len(features) > 1 else features[0]
    x = layers.Dense(256, activation="relu", name="fusion_dense")(x)
    x = layers.Dropout(config.dropout, name="fusion_dropout")(x)

    # Sigmoid (not softmax) heads, as in the reference notebook: each class is an
    # independent yes/no trained with binary cross-entropy and positive-class weights,
    # which copes with the unbalanced product types. The service takes the argmax.
    # float32 heads keep probabilities stable when a mixed_float16 policy is active.
    outputs = {
        GENDER_HEAD: layers.Dense(
            len(gender_labels), activation="sigmoid", dtype="float32", name=GENDER_HEAD
        )(x),
        PRODUCT_HEAD: layers.Dense(
            len(product_labels), activation="sigmoid", dtype="float32", name=PRODUCT_HEAD
        )(x),
    }
    return keras.Model(inputs=inputs, outputs=outputs, name="tagger")


def _image_branch(image: keras.KerasTensor, config: ModelConfig) -> keras.KerasTensor:
    from keras import layers

    size = config.image_size
    backbone = _backbone(size, config.backbone_weights)
    # Frozen by default: with ~12k labelled images, ImageNet features generalise better
    # than re-fitting 4M backbone weights, and training is far cheaper.
    if config.train_backbone:
        backbone.trainable = True
    elif config.fine_tune_layers:
        backbone.trainable = True
        for layer in backbone.layers[: -config.fine_tune_layers]:
            layer.trainable = False
        # BatchNorm layers stay frozen even in the unfrozen tail: updating their
        # statistics from small batches wrecks the pretrained features (Keras guide).
        for layer in backbone.layers[-config.fine_tune_layers :]:
            if isinstance(layer, layers.BatchNormalization):
                layer.trainable = False
    else:
        backbone.trainable = False
    # training=False keeps the backbone's BatchNorm in inference mode even when its
    # weights are being fine-tuned, for the same reason. The exception is a randomly
    # initialised backbone trained in full (`--backbone-weights none`): its BatchNorm has
    # no statistics to protect and must normalise with batch statistics while training,
    # or the deep random network does not train at all.
    from_scratch = config.backbone_weights is None and config.train_backbone
    if from_scratch:
        _for_training_from_scratch(backbone)
    x = backbone(image) if from_scratch else backbone(image, training=False)
    x = layers.GlobalAveragePooling2D(name="image_pool")(x)
    x = layers.BatchNormalization(name="image_bn")(x)
    return layers.Dense(256, activation="relu", name="image_dense")(x)


def _for_training_from_scratch(backbone: keras.Model) -> None:
    """Settings for a random backbone trained on a small set in few epochs.

    BatchNorm momentum 0.9 instead of 0.99: the moving statistics used at inference must
    catch up with weights that change fast, or validation (and the saved model) sees
    stale statistics for the first few hundred steps. Stochastic depth (the backbone's
    per-block dropout) is switched off: it is a regulariser for long ImageNet runs and
    only slows down a short one; the fusion block keeps its own dropout.
    """
    from keras import layers

    for layer in backbone.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = 0.9
        elif isinstance(layer, layers.Dropout):
            layer.rate = 0.0


def _backbone(size: int, weights: str | None) -> keras.Model:
    import keras

    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise ValueError(f"backbone weights file not found: {weights}")
    # Keras's EfficientNet rescales and normalises 0-255 pixels itself, so the model
    # (and the service) feed raw pixel values: no preprocessing to keep in sync.
    backbone = keras.applications.EfficientNetB0(
        include_top=False, weights=weights, input_shape=(size, size, 3), name=BACKBONE
    )
    if weights not in (None, "imagenet"):
        _fix_local_imagenet_normalization(backbone)
    return backbone


def _fix_local_imagenet_normalization(backbone: keras.Model) -> None:
    """Make a local copy of the ImageNet weights normalise inputs as ``"imagenet"`` does.

    Keras's ImageNet weight files store the per-channel *standard deviation* as the
    Normalization layer's variance (tensorflow/tensorflow#49930). For
    ``weights="imagenet"`` Keras compensates with an extra Rescaling layer, but only for
    that literal string: loading the very same file by path skips it and the backbone
    sees differently scaled inputs. Squaring the stored value gives the same result.
    """
    import numpy as np
    from keras import layers

    for layer in backbone.layers:
        if not isinstance(layer, layers.Normalization):
            continue
        mean = np.asarray(layer.adapt_mean.numpy()).ravel()
        var = np.asarray(layer.adapt_variance.numpy()).ravel()
        if np.allclose(mean, _IMAGENET_MEAN_RGB, atol=1e-4) and np.allclose(
            var, _IMAGENET_STDDEV_RGB, atol=1e-4
        ):
            layer.adapt_variance.assign(np.square(_IMAGENET_STDDEV_RGB).astype("float32"))
            layer.finalize_state()  # the layer caches mean/variance tensors
        return


def _text_branch(
    caption: keras.KerasTensor, config: ModelConfig, captions: list[str] | None
) -> keras.KerasTensor:
    from keras import layers

    # Lower-casing lives inside the layer (standardize) so it is saved with the model
    # and the service cannot forget to apply it.
    vectorizer = layers.TextVectorization(
        max_tokens=config.vocab_size,
        output_sequence_length=config.sequence_length,
        standardize="lower_and_strip_punctuation",
        name="caption_vectorizer",
    )
    texts = [c for c in (captions or []) if c and c.strip()]
    vectorizer.adapt(texts or _PLACEHOLDER_CAPTIONS)
    x = vectorizer(caption)
    # mask_zero is off on purpose: pooling over padding is what the notebook did, and
    # an all-padding caption (missing text) must still give a defined vector.
    x = layers.Embedding(config.vocab_size, config.embedding_dim, name="caption_embedding")(x)
    x = layers.GlobalAveragePooling1D(name="caption_pool")(x)
    x = layers.Dense(128, activation="relu", name="caption_dense")(x)
    return layers.BatchNormalization(name="caption_bn")(x)
