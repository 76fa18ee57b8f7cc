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

Neither stage re-runs what nobody trains. The head stage is ``features-augment``'s (the head
on cached augmented views). For fine-tuning, the base is cut where the top block begins: the
frozen lower part's output for every view (and for the unaugmented validation and test
images) is computed once through the CPU runtime and cached (``views/chapter/<tag>-lower-<layer>``;
shared by every seed and start run with the same base weights), and only the top block and
the head train, on those maps. That is exact: below the cut nothing trains and BatchNorm is
in inference mode. ``model.keras`` is still the chapter's one model, uint8 image to probability:
augmentation, the whole base with the fine-tuned top block, the head.
"""
import dataclasses

from ..labels import classes_of_units
from . import features, features_augment, pretrained
from .base import Stage, get, register
from .options import DEFAULT_HEAD_EPOCHS, FinetuneOptions


def _start(start):
    """The start option (a run folder or a .keras file) -> :class:`~smallvision.runs.ModelSource`."""
    from ..runs import resolve_model
    try:
        return resolve_model(start)
    except ValueError as e:
        raise ValueError(f"--from {e}") from None


def _load_start(start):
    """The start run's model: the one chosen on validation (a refit run's ``selection.keras``;
    a .keras file given by name is that file)."""
    from ..runs import load_model
    try:
        return load_model(_start(start).selection_path)
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
    chapter_figure = "98.5 %"
    Options = FinetuneOptions
    fills_caches = True

    def learning_rate(self, options):
        """The fine-tuning stage's (the head stage's is features-augment's)."""
        return self.default_learning_rate

    def default_image_size(self, o):
        if o.start:
            source = _start(o.start)
            if source.config is not None:
                return tuple(source.config.image_size)
            _, h, w, _ = _load_start(o.start).input_shape
            return (h, w)
        return super().default_image_size(o)

    def validate(self, o, class_names):
        """A start run must have been trained on the same classes, from a pretrained base."""
        if not o.start:
            return
        config = _start(o.start).config
        if config is None:
            return
        if not isinstance(get(config.strategy), (features_augment.FeaturesAugment, Finetune)):
            raise ValueError(f"--from {o.start}: a {config.strategy} run; fine-tuning starts from a "
                             "features-augment (or finetune) run")
        if list(config.class_names) != list(class_names):
            raise ValueError(f"--from {o.start}: trained on classes {list(config.class_names)}, this data "
                             f"has {list(class_names)}")

    def build(self, image_size, num_classes, seed, learning_rate, o):
        """The model the first stage trains: the head on cached views, or the start model."""
        if not o.start:
            return features.head_model(image_size, num_classes, _head_learning_rate(o), o)
        model = _load_start(o.start)
        if tuple(model.input_shape[1:3]) != tuple(image_size):
            raise ValueError(f"--from {o.start}: the model takes {model.input_shape[1]}x{model.input_shape[2]} "
                             f"images. Received: image_size={tuple(image_size)}")
        from ..labels import output_units
        units = model.output_shape[-1]
        if units != output_units(num_classes):
            raise ValueError(f"--from {o.start}: the model has {units} output units; this data has "
                             f"{num_classes} classes")
        backbone_of(model)
        return model

    def refit_options(self, o):
        """A refit fine-tunes the start run's published model (with a refit start run: the one
        trained on train + validation), where the selection fine-tuned its selection model."""
        return o.replace(start=_start(o.start).model_path) if o.start else o

    def stages(self, spec, num_classes):
        """"head" first on cached views (unless started from a trained run), then "finetune" on
        the cached lower-part maps."""
        o, size = spec.options, tuple(spec.image_size)

        def enter_finetune(model):
            full = model if o.start else features_augment.end_to_end(model, size, o)
            return top_model(full, num_classes, spec.learning_rate)

        def head_inputs(prep, progress, seed):
            self.fill_caches(prep, o, progress, seed)  # one frozen pass: the maps and the pooled views
            return features_augment.view_inputs(prep, o, progress, seed)

        def finetune_inputs(prep, progress, seed):
            return lower_inputs(prep, o, progress, seed)

        head = [] if o.start else \
            [Stage("head", o.head_epochs, None, head_inputs, pretrained.head_schedule(o, _head_learning_rate(o)))]
        return head + [Stage("finetune", spec.epochs, enter_finetune, finetune_inputs)]

    def total_epochs(self, epochs, o):
        return epochs + (0 if o.start else o.head_epochs)

    def image_model(self, model, spec, stage):
        """The chapter's one model (augmentation, base, head) with the fine-tuned weights (stopped
        before fine-tuning began: with the trained head)."""
        from ..models.walk import copy_weights
        o, size = spec.options, spec.image_size
        if stage == "head":
            return features_augment.end_to_end(model, size, o)
        full = _load_start(o.start) if o.start else features_augment.build_model(
            size, classes_of_units(model.output_shape[-1]), 0, 1e-3, o)
        return copy_weights(model, full)

    def fill_caches(self, prep, o, progress=True, seed=0):
        """One frozen pass for everything the pretrained strategies read: the clean images' lower
        maps and pooled vectors (``features``), the views' maps and pooled vectors
        (``features-augment``, the head stage)."""
        lower_inputs(prep, o, progress, seed)

    def starts_from(self, o):
        return _start(o.start) if o.start else None

    def base_options(self, o):
        """The options of the frozen base the maps come from: this run's, or the start run's
        (followed back through a chain of finetune runs). Its lower part is frozen in all of
        them, so the maps are the same."""
        start = self.start_run(o)
        if start is None and o.start:
            raise ValueError(f"--from {o.start}: a model file without its run folder; fine-tuning on cached "
                             "maps needs the run's config.json (give the run folder)")
        if start is None:
            return o
        strat, options = start
        base = strat.base_options(options) if isinstance(strat, Finetune) else options
        return base.replace(precision=o.precision or "fp32")  # the maps' arithmetic is this run's

    def backbone(self, o):
        start = self.start_run(o)
        if start is not None:
            return start[0].backbone(start[1])
        return backbone_of(_load_start(o.start)) if o.start else super().backbone(o)

    def pooled_features(self, o):
        """None: the fine-tuned base no longer gives the cached features (novelty runs the network)."""
        return None

    def describe_head(self, o):
        """The start run's head (followed back through a chain of finetune runs)."""
        start = self.start_run(o)
        if start is not None:
            return start[0].describe_head(start[1])
        return None if o.start else super().describe_head(o)

    def in_ladder(self, values, seed, ladder):
        """Fine-tune the ladder's features-augment run of the same seed (the chapter's way: its head
        is not trained twice); without one, train the head first for the ladder's scaled epochs."""
        own = super().in_ladder(values, seed, ladder)
        start = ladder.run("features-augment", seed)
        if start is not None:
            return self.Options.parse(self.name, {"start": start, "views": own.views})
        return own.replace(head_epochs=ladder.epochs("features-augment"))

    def cache_options(self, o, ladder):
        """With a start run in the ladder: that run's base (it may not have run yet) and these views."""
        start = ladder.options_of(o.start)
        if start is None:
            return o
        return FinetuneOptions(**dataclasses.asdict(start.base), views=o.views, head_epochs=DEFAULT_HEAD_EPOCHS)


def _head_learning_rate(o):
    """The head stage's learning rate: features-augment's for these options."""
    return get("features-augment").learning_rate(o)


def cut_layer(backbone, base):
    """The layer after which fine-tuning's trainable part begins: what feeds the top block."""
    from ..models.walk import leaves, producers
    first = pretrained.top_block(backbone, base)[0]
    found = [layer for layer in leaves(base) if layer.name == first]
    if not found:
        raise ValueError(f"backbone {backbone}: top-block layer {first} not found")
    before = producers(found[0])
    if len(before) != 1:
        raise ValueError(f"backbone {backbone}: {first} has {len(before)} inputs; cannot cut before it")
    return before[0]


def top_model(full, num_classes, learning_rate):
    """What fine-tuning trains: the lower part's map -> the top block -> the head, cut out of the
    chapter's model ``full`` (sharing its weights), top block trainable (BatchNorm frozen), compiled."""
    import keras
    from keras import layers

    from ..models.heads import compile_classifier
    from ..models.walk import leaves, split
    backbone = backbone_of(full)
    base = full.get_layer(backbone)
    _, top = split(full, cut_layer(backbone, base))
    top = keras.Model(top.input, top.output, name=f"finetune_{backbone}_top")
    names = set(pretrained.top_block(backbone, base))
    for layer in leaves(top):
        if layer.name in names:
            layer.trainable = not isinstance(layer, layers.BatchNormalization)
    return compile_classifier(top, num_classes, keras.optimizers.RMSprop(learning_rate),
                              features.HEAD_STEPS_PER_CALL)


def lower_extractor(image_size, o, weights=True):
    """uint8 images -> the map that feeds the top block, from the frozen base of options ``o``."""
    import keras

    from ..models.walk import split
    base = pretrained.frozen_base(image_size, o, weights=weights)
    body, _ = split(base, cut_layer(o.backbone, base))
    images = keras.Input(shape=tuple(image_size) + (3,), dtype="uint8", name="image")
    return keras.Model(images, body(images), name=f"{o.backbone}_lower")


def pair_extractor(image_size, o, weights=True):
    """uint8 images -> the lower part's map (flattened) and the base's pooled output, concatenated:
    what fine-tuning and the head stage cache, from one frozen pass."""
    import keras
    from keras import layers

    from ..models.walk import split
    base = pretrained.frozen_base(image_size, o, weights=weights)
    body, top = split(base, cut_layer(o.backbone, base))
    images = keras.Input(shape=tuple(image_size) + (3,), dtype="uint8", name="image")
    lower = body(images)
    pooled = layers.GlobalAveragePooling2D(name="avg_pool")(top(lower))
    return keras.Model(images, layers.Concatenate(name="maps_and_pooled")([layers.Flatten(name="flat")(lower), pooled]),
                       name=f"{o.backbone}_lower_and_pooled")


def lower_inputs(prep, options, progress, seed):
    """{split: inputs} of the fine-tuning stage: views of the lower part's map for training,
    the unaugmented maps for validation and test (``options``: a finetune run's; the maps come
    from its base's, :meth:`Finetune.base_options`)."""
    o = get("finetune").base_options(options)
    size = (prep.spec.height, prep.spec.width)
    base = pretrained.frozen_base(size, o, weights=False)  # once, for the cut and both row shapes
    cut = cut_layer(o.backbone, base)
    ex = features.Extractor(o, size, part=f"lower-{cut.name}", build=lambda weights: lower_extractor(size, o, weights),
                            shape=cut.output.shape[1:], prep=prep)
    if o.head == "gap":  # the head's cached vectors come out of the same pass
        pooled = features.Extractor(o, size, shape=base.output_shape[-1:], prep=prep)
        ex = features.Extractor(o, size, part=f"{ex.part}+gap", build=lambda weights: pair_extractor(size, o, weights),
                                parts=[ex, pooled], prep=prep)
    k = options.views
    clean = features.cached_features(prep, o, progress, extractor=ex)
    train = features.FreshViews(prep, o, seed, extractor=ex) if k == "exact" else \
        features.ViewSet(features.cached_views(prep, o, k, progress, extractor=ex), k, seed)
    return dict(clean, train=train)
