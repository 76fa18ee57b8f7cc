"""What the pretrained strategies share: their options, the frozen conv base, the chapter's
head, and the top block that fine-tuning unfreezes (``finetune.top_model`` does it).

A note on "inference mode" under Keras 3: ``base(x, training=False)`` inside a functional
model does *not* stick — the outer ``fit`` passes ``training=True`` down to every nested
layer. What does hold: a BatchNormalization layer that is not trainable always uses its
moving statistics, and a dropout layer with rate 0 does nothing. ``frozen_base`` relies on
exactly those two facts, so the base computes the same features in ``fit`` as in ``predict``.
"""
import keras
from keras import layers

from ..models.heads import classifier_output, compile_classifier
from ..models.walk import leaves
from .base import Strategy

DEFAULT_BACKBONE = "efficientnet_lite0"
HEADS = ("flatten", "gap")
_NOISE = (layers.Dropout, layers.SpatialDropout1D, layers.SpatialDropout2D, layers.SpatialDropout3D,
          layers.GaussianDropout, layers.GaussianNoise, layers.AlphaDropout)


def options(options):
    """The strategy options with their defaults filled in (backbone, head, weights)."""
    from ..backbones.registry import get
    o = dict(options or {})
    o.setdefault("backbone", DEFAULT_BACKBONE)
    o.setdefault("head", get(o["backbone"]).default_head)
    o.setdefault("weights", "imagenet")
    if o["head"] not in HEADS:
        raise ValueError(f"head must be one of {HEADS}. Received: head={o['head']!r}")
    return o


class Pretrained(Strategy):
    """What ``features``, ``features-augment`` and ``finetune`` share: the backbone options,
    the weights file checked at the edge, the backbone's native image size."""

    options = ("backbone", "head", "weights")

    def validate(self, opts, class_names):
        """The backbone's name, the head, and a ``weights`` file (readable, read without running
        code, tensors that fit the backbone) — before a run folder exists."""
        o = options(opts)
        if o["weights"] not in (None, "imagenet"):
            from ..backbones.registry import check_weights
            check_weights(o["backbone"], o["weights"])

    def default_image_size(self, opts):
        """The backbone's native input size (224 for Lite0, the chapter's 180 for VGG)."""
        from ..backbones.registry import get
        size = get(options(opts)["backbone"]).native_size
        return (size, size)

    def backbone(self, opts):
        return options(opts)["backbone"]


def frozen_base(image_size, opts, weights=True):
    """The backbone (0..255 RGB in, feature map out), frozen and in inference mode for good."""
    from ..backbones.registry import create
    o = options(opts)
    base = create(o["backbone"], tuple(image_size), weights=o["weights"] if weights else None)
    for layer in leaves(base):
        if isinstance(layer, _NOISE):  # stochastic depth etc.: off, even when fit says training=True
            for attr in ("rate", "stddev"):
                if hasattr(layer, attr):
                    setattr(layer, attr, 0.0)
    base.trainable = False
    return base


def head(x, head_kind, num_classes):
    """The chapter's classifier on a feature map: Flatten (or global average pooling) ->
    Dense(256, relu) -> Dropout(0.5) -> Dense(1, sigmoid) / Dense(N, softmax). On an already
    pooled vector (the cached features of a ``gap`` head) the pooling is not repeated."""
    if len(x.shape) > 2:
        x = layers.Flatten(name="flatten")(x) if head_kind == "flatten" else \
            layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dense(256, activation="relu", name="dense")(x)
    x = layers.Dropout(0.5, name="dropout")(x)
    return classifier_output(x, num_classes)


def classifier(inputs, features, opts, num_classes, learning_rate, name, steps_per_execution=1):
    """The chapter's head on ``features`` as one compiled model from ``inputs`` (RMSprop)."""
    model = keras.Model(inputs, head(features, opts["head"], num_classes), name=name)
    return compile_classifier(model, num_classes, keras.optimizers.RMSprop(learning_rate), steps_per_execution)


def top_block(backbone, base):
    """Names of the layers fine-tuning unfreezes: the registry's top block, or, for a backbone
    without one, the last four layers that have weights (the chapter's "last 4 layers")."""
    from ..backbones.registry import get
    names = get(backbone).top_block
    if names:
        return tuple(names)
    weighted = [layer.name for layer in leaves(base) if layer.weights and not isinstance(layer, layers.BatchNormalization)]
    return tuple(weighted[-4:])
