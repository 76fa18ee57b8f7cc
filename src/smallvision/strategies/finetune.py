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
from ..runs import resolve_model
from . import features_augment, pretrained
from .base import Stage, get, register


def _start(start):
    """The start option (a run folder or a .keras file) -> :class:`~smallvision.runs.ModelSource`."""
    try:
        return resolve_model(start)
    except ValueError as e:
        raise ValueError(f"--from {e}") from None


def _load_start(start):
    from ..runs import load_model
    try:
        return load_model(_start(start).model_path)
    except ValueError as e:
        raise ValueError(f"--from {start}: {str(e).split(': ', 1)[-1]}") from None


def backbone_of(model):
    """The registry name of the conv base inside ``model``."""
    from ..backbones.registry import BACKBONES
    found = [layer.name for layer in model.layers if layer.name in BACKBONES]
    if len(found) != 1:
        raise ValueError(f"model {model.name}: expected one pretrained conv base among its layers, found "
                         f"{found or 'none'}")
    return found[0]


@register
class Finetune(pretrained.Pretrained):
    name = "finetune"
    summary = "features-augment, then the backbone's top block unfrozen (RMSprop 1e-5, 30 epochs)"
    default_epochs = 30
    default_learning_rate = 1e-5
    options = ("backbone", "head", "weights", "start", "head_epochs")

    def default_image_size(self, options):
        if options and options.get("start"):
            source = _start(options["start"])
            if source.config is not None:
                return tuple(source.config.image_size)
            _, h, w, _ = _load_start(options["start"]).input_shape
            return (h, w)
        return super().default_image_size(options)

    def validate(self, options, class_names):
        """A start run must have been trained on the same classes, from a pretrained base."""
        if not options.get("start"):
            super().validate(options, class_names)
            return
        config = _start(options["start"]).config
        if config is None:
            return
        if config.strategy not in ("features-augment", "finetune"):
            raise ValueError(f"--from {options['start']}: a {config.strategy} run; fine-tuning starts from a "
                             "features-augment (or finetune) run")
        if list(config.class_names) != list(class_names):
            raise ValueError(f"--from {options['start']}: trained on classes {list(config.class_names)}, this data "
                             f"has {list(class_names)}")

    def build(self, image_size, num_classes, seed, learning_rate, options=None):
        """The model the first stage trains: the start model, or a new features-augment model."""
        o = dict(options or {})
        if not o.get("start"):
            return features_augment.build_model(image_size, num_classes, seed,
                                                features_augment.FeaturesAugment.default_learning_rate, o)
        model = _load_start(o["start"])
        if tuple(model.input_shape[1:3]) != tuple(image_size):
            raise ValueError(f"--from {o['start']}: the model takes {model.input_shape[1]}x{model.input_shape[2]} "
                             f"images. Received: image_size={tuple(image_size)}")
        from ..labels import output_units
        units = model.output_shape[-1]
        if units != output_units(num_classes):
            raise ValueError(f"--from {o['start']}: the model has {units} output units; this data has "
                             f"{num_classes} classes")
        backbone_of(model)
        return model

    def stages(self, config):
        """Head first (unless started from a trained run), then fine-tuning."""
        o = config.options
        n = len(config.class_names)

        def enter_finetune(model):
            model, _ = pretrained.unfreeze_top_block(model, backbone_of(model), n, config.learning_rate)
            return model

        head_epochs = 0 if o.get("start") else int(o.get("head_epochs", features_augment.FeaturesAugment.default_epochs))
        out = [Stage("head", head_epochs, None)] if head_epochs else []
        return out + [Stage("finetune", config.epochs, enter_finetune)]

    def backbone(self, options):
        if options.get("start"):
            config = _start(options["start"]).config
            if config is not None:
                return get(config.strategy).backbone(config.options)
            return backbone_of(_load_start(options["start"]))
        return super().backbone(options)
