"""What the pretrained strategies share: their options (:class:`~.options.PretrainedOptions`),
the frozen conv base, the chapter's head, and the top block that fine-tuning unfreezes
(``finetune.top_model`` does it). Keras is imported where a model is built, not here.

A note on "inference mode" under Keras 3: ``base(x, training=False)`` inside a functional
model does *not* stick — the outer ``fit`` passes ``training=True`` down to every nested
layer. What does hold: a BatchNormalization layer that is not trainable always uses its
moving statistics, and a dropout layer with rate 0 does nothing. ``frozen_base`` relies on
exactly those two facts, so the base computes the same features in ``fit`` as in ``predict``.
"""
import contextlib
import math

from .base import Stage, Strategy
from .options import PretrainedOptions

LINEAR_L2 = 1e-3  # per-sample L2 of the linear head: a logistic regression's C ~ 1 / (2 * 1e-3 * n), 0.25 at n=2,000
LINEAR_LEARNING_RATE = 1e-2  # Adam, decayed to ~0 over the epochs (cosine): the last epoch is at the optimum


def _noise_layers():
    from keras import layers
    return (layers.Dropout, layers.SpatialDropout1D, layers.SpatialDropout2D, layers.SpatialDropout3D,
            layers.GaussianDropout, layers.GaussianNoise, layers.AlphaDropout)


class Pretrained(Strategy):
    """What ``features``, ``features-augment`` and ``finetune`` share: the backbone options,
    the weights file checked at the edge, the backbone's native image size."""

    Options = PretrainedOptions

    def check_options(self, o):
        """The backbone's weights — the ImageNet package installed, or a ``weights`` file readable,
        read without running code, with tensors that fit the backbone — before a run folder exists
        or an image is decoded."""
        check_base_weights(o)

    def learning_rate(self, o):
        """The head's: RMSprop 1e-3 for the chapter's head, Adam 1e-2 for the linear one."""
        return LINEAR_LEARNING_RATE if o.classifier == "linear" else self.default_learning_rate

    def stages(self, spec, num_classes):
        """One stage; the linear head's learning rate decays over it (:func:`head_schedule`)."""
        return [Stage("train", spec.epochs, None, schedule=head_schedule(spec.options, spec.learning_rate))]

    def default_image_size(self, o):
        """The backbone's native input size (224 for Lite0, the chapter's 180 for VGG)."""
        from ..backbones.registry import get
        size = get(o.backbone).native_size
        return (size, size)

    def backbone(self, o):
        return o.backbone

    def pooled_features(self, o):
        """The frozen base's output, as the features cache holds it (maps are pooled by novelty)."""
        return o.base

    def describe_head(self, o):
        return f"{o.head}, {o.classifier}"


def check_base_weights(o):
    """The ImageNet weights of ``o.backbone`` present (when a package gives them), or its weights file
    readable and fitting; a one-line error otherwise."""
    from ..backbones.registry import check_imagenet, check_weights
    if o.weights == "imagenet":
        check_imagenet(o.backbone)
    elif o.weights is not None:
        check_weights(o.backbone, o.weights)


@contextlib.contextmanager
def random_state_kept():
    """Python's and NumPy's generators as they were before the block: a network built only to
    learn a shape draws its initializers' default seeds from Python's generator (Keras'
    ``make_default_seed``), and must not change what the model built next draws — a cold cache
    and a warm one (which builds nothing) then give the same run."""
    import random

    import numpy as np
    py, np_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)


def frozen_base(image_size, o, weights=True):
    """The backbone of options ``o`` (0..255 RGB in, feature map out), frozen and in inference
    mode for good; ``weights=False``: without its weights (to learn shapes), leaving the random
    generators as they were (:func:`random_state_kept`)."""
    if not weights:
        with random_state_kept():
            return _frozen(image_size, o, None)
    return _frozen(image_size, o, o.weights)


def _frozen(image_size, o, weights):
    from ..backbones.registry import create
    from ..models.walk import leaves
    base = create(o.backbone, tuple(image_size), weights=weights)
    noise = _noise_layers()
    for layer in leaves(base):
        if isinstance(layer, noise):  # stochastic depth etc.: off, even when fit says training=True
            for attr in ("rate", "stddev"):
                if hasattr(layer, attr):
                    setattr(layer, attr, 0.0)
    base.trainable = False
    return base


def head(x, o, num_classes):
    """The classifier on a feature map or an already pooled vector (the cached features of a
    ``gap`` head: the pooling is not repeated). ``o.head``: Flatten or global average
    pooling first; ``o.classifier``:

    * ``chapter``: Dense(256, relu) -> Dropout(0.5) -> Dense(1, sigmoid) / Dense(N, softmax);
    * ``linear``: the output layer alone, with L2 on its kernel (a logistic regression).
    """
    import keras
    from keras import layers

    from ..models.heads import classifier_output
    if len(x.shape) > 2:
        x = layers.Flatten(name="flatten")(x) if o.head == "flatten" else \
            layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if o.classifier == "linear":
        return classifier_output(x, num_classes, kernel_regularizer=keras.regularizers.L2(LINEAR_L2))
    x = layers.Dense(256, activation="relu", name="dense")(x)
    x = layers.Dropout(0.5, name="dropout")(x)
    return classifier_output(x, num_classes)


def head_schedule(o, learning_rate):
    """The linear head's learning rate per epoch: cosine decay from ``learning_rate`` towards 0
    over the stage, so that training ends at the regularised regression's optimum instead of
    wandering around it at a constant step (and a refit, decayed over its own epochs, ends there
    too). None for the chapter's head: a constant rate, as in the chapter."""
    if o.classifier != "linear":
        return None
    return lambda k, epochs: learning_rate * 0.5 * (1 + math.cos(math.pi * min(k, epochs) / max(epochs, 1)))


def classifier(inputs, features, o, num_classes, learning_rate, name, steps_per_execution=1):
    """The head on ``features`` as one compiled model from ``inputs`` (RMSprop for the chapter's
    head, as in the chapter; Adam for the linear one)."""
    import keras

    from ..models.heads import compile_classifier
    model = keras.Model(inputs, head(features, o, num_classes), name=name)
    optimizer = keras.optimizers.Adam(learning_rate) if o.classifier == "linear" else \
        keras.optimizers.RMSprop(learning_rate)
    return compile_classifier(model, num_classes, optimizer, steps_per_execution)


def top_block(backbone, base):
    """Names of the layers fine-tuning unfreezes: the registry's top block, or, for a backbone
    without one, the last four layers that have weights (the chapter's "last 4 layers")."""
    from keras import layers

    from ..backbones.registry import get
    from ..models.walk import leaves
    names = get(backbone).top_block
    if names:
        return tuple(names)
    weighted = [layer.name for layer in leaves(base) if layer.weights and not isinstance(layer, layers.BatchNormalization)]
    return tuple(weighted[-4:])
