"""``finetune``: the chapter's fine-tuning — a ``features-augment`` model whose backbone's top
block is then unfrozen and trained together with the head at a tiny learning rate
(2nd ed., VGG16: about 98.5 %).

Two ways to start:

* ``start=RUN`` (``--from RUN``): a finished ``features-augment`` (or ``finetune``) run folder or
  its ``model.keras``; only the fine-tuning stage runs (``epochs``, default 30).
* no start: the same run first trains the head as ``features-augment`` does
  (``head_epochs``, default 50, RMSprop 1e-3), then fine-tunes. ``history.csv`` holds both
  stages; ``metrics.json`` says where the second began.

Fine-tuning: the registry's top block (VGG16: block5_conv1-3, the chapter's "last 4 layers";
EfficientNet-Lite: the last MBConv block and the head conv) becomes trainable; every
BatchNormalization layer stays frozen, hence in inference mode, so its moving statistics
do not change; recompiled with RMSprop at ``learning_rate`` (default 1e-5).
"""
import os

import keras

from . import features_augment, pretrained

NAME = "finetune"
SUMMARY = "features-augment, then the backbone's top block unfrozen (RMSprop 1e-5, 30 epochs)"
DEFAULT_EPOCHS = 30
DEFAULT_LEARNING_RATE = 1e-5
OPTIONS = ("backbone", "head", "weights", "start", "head_epochs")


def _start_paths(start):
    """(model file, run folder or None) of a ``start`` option."""
    start = os.fspath(start)
    if os.path.isdir(start):
        return os.path.join(start, "model.keras"), start
    folder = os.path.dirname(os.path.abspath(start))
    return start, folder if os.path.isfile(os.path.join(folder, "config.json")) else None


def _start_config(start):
    from ..runs import Run
    _, folder = _start_paths(start)
    return Run.open(folder).config if folder else None


def default_image_size(options):
    if options and options.get("start"):
        config = _start_config(options["start"])
        if config:
            return tuple(config["image_size"])
        _, h, w, _ = _load_start(options["start"]).input_shape
        return (h, w)
    return pretrained.default_image_size(options)


def validate(options, class_names):
    """A start run must have been trained on the same classes, from a pretrained base."""
    if not options.get("start"):
        pretrained.validate(options, class_names)
        return
    config = _start_config(options["start"])
    if config is None:
        return
    if config.get("strategy") not in ("features-augment", "finetune"):
        raise ValueError(f"--from {options['start']}: a {config.get('strategy')} run; fine-tuning starts from a "
                         "features-augment (or finetune) run")
    if list(config["class_names"]) != list(class_names):
        raise ValueError(f"--from {options['start']}: trained on classes {config['class_names']}, this data has "
                         f"{list(class_names)}")


def _load_start(start):
    path, _ = _start_paths(start)
    if not os.path.isfile(path):
        raise ValueError(f"--from {start}: no such run folder or model file")
    try:
        return keras.saving.load_model(path)
    except Exception as e:
        raise ValueError(f"--from {start}: cannot load the model ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def backbone_of(model):
    """The registry name of the conv base inside ``model``."""
    from ..backbones.registry import BACKBONES
    found = [layer.name for layer in model.layers if layer.name in BACKBONES]
    if len(found) != 1:
        raise ValueError(f"model {model.name}: expected one pretrained conv base among its layers, found "
                         f"{found or 'none'}")
    return found[0]


def build(image_size, num_classes, seed, learning_rate, options=None):
    """The model the first stage trains: the start model, or a new features-augment model."""
    o = dict(options or {})
    if not o.get("start"):
        return features_augment.build(image_size, num_classes, seed, features_augment.DEFAULT_LEARNING_RATE, o)
    model = _load_start(o["start"])
    if tuple(model.input_shape[1:3]) != tuple(image_size):
        raise ValueError(f"--from {o['start']}: the model takes {model.input_shape[1]}x{model.input_shape[2]} "
                         f"images. Received: image_size={tuple(image_size)}")
    units = model.output_shape[-1]
    if units != (1 if num_classes == 2 else num_classes):
        raise ValueError(f"--from {o['start']}: the model has {units} output units; this data has {num_classes} classes")
    backbone_of(model)
    return model


def stages(config):
    """[(name, epochs, enter)]: ``enter(model) -> model`` prepares the model for the stage."""
    o = config.get("options") or {}
    n = len(config["class_names"])

    def enter_finetune(model):
        model, _ = pretrained.unfreeze_top_block(model, backbone_of(model), n, config["learning_rate"])
        return model

    head_epochs = 0 if o.get("start") else int(o.get("head_epochs", features_augment.DEFAULT_EPOCHS))
    out = [("head", head_epochs, None)] if head_epochs else []
    return out + [("finetune", config["epochs"], enter_finetune)]
