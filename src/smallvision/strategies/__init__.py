"""Training strategies: one module each, all built the same way and trained by ``train.py``.

A strategy module defines ``NAME``, ``SUMMARY``, ``DEFAULT_EPOCHS``, ``DEFAULT_LEARNING_RATE``
and ``build(image_size, num_classes, seed, learning_rate, options) -> compiled keras.Model``.
It may also define what it trains on and what it saves (defaults: the cached images, and the
trained model itself):

    OPTIONS = ("backbone", ...)                               options it accepts (default: none)
    inputs(prep, options, progress) -> {split: array-like}    e.g. cached backbone features
    export(model, image_size, options) -> keras.Model         the model saved as model.keras
    default_image_size(options) -> (height, width)            default: 180 x 180
    validate(options, class_names)                            raise ValueError on unusable options
    stages(config) -> [(name, epochs, enter)]                 training in stages (fine-tuning):
        ``enter(model) -> model`` runs once when a stage begins (None: nothing to change);
        default: one stage of ``config["epochs"]`` epochs.
"""
from ..errors import SmallvisionError
from . import augment, features, features_augment, finetune, nopool, scratch

# the chapter's ladder, in order, then the teaching extra
STRATEGIES = {m.NAME: m for m in (scratch, augment, features, features_augment, finetune, nopool)}


def get(name):
    try:
        return STRATEGIES[name]
    except KeyError:
        raise SmallvisionError(f"unknown strategy {name!r}; expected one of: {', '.join(STRATEGIES)}") from None


def compile_classifier(model, num_classes, optimizer):
    """The chapter's loss and metric for the number of classes."""
    loss = "binary_crossentropy" if num_classes == 2 else "sparse_categorical_crossentropy"
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    return model
