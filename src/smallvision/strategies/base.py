"""The strategy contract, its defaults, and the registry.

A strategy is a subclass of :class:`Strategy` that sets its name, summary, defaults and
``Options`` class (:mod:`.options`) and implements :meth:`~Strategy.build`; every other hook has
a default here, so the runner, the ladder and the report call them without probing and never
ask for a strategy by name. ``@register`` puts one instance in the registry where the class is
defined (timm's idea); :func:`get` finds it by name. Nothing here imports Keras: the command
line reads names, summaries, defaults and options from the registry at no cost.

The hooks receive the options as the strategy's typed ``Options`` and the training settings as
a :class:`~.spec.TrainSpec`.
"""
import collections

from ..checks import DEFAULT_IMAGE_SIZE, lookup
from ..errors import SmallvisionError
from .options import Options, flag

Stage = collections.namedtuple("Stage", "name epochs enter inputs schedule", defaults=(None, None))
Stage.__doc__ = """One stage of training, named: ``epochs`` epochs; ``enter(model) -> model`` runs
once when the stage begins (None: nothing to change), e.g. fine-tuning's unfreeze; ``inputs(prep,
progress, seed) -> {split: inputs}`` when the stage trains on other inputs than the strategy's
(None: :meth:`Strategy.inputs`), e.g. fine-tuning on cached maps of the base's lower part;
``schedule(k, epochs) -> learning rate`` of the stage's epoch k (0-based) when it is not
constant (None: the compiled one throughout), e.g. the linear head's cosine decay."""

_REGISTRY = {}


class Strategy:
    """Defaults for every hook; a strategy overrides what it needs."""

    name = ""
    summary = ""
    default_epochs = 30
    default_learning_rate = 1e-3
    Options = Options  # its options dataclass (strategies.options)
    chapter_figure = ""  # the chapter's test accuracy for it (Deep Learning with Python, 2nd ed., VGG16)

    def parse_options(self, given=None):
        """The options of a new run from the values given (None: not given), checked and complete;
        an option it does not take is refused in one line naming the strategies that take it."""
        given = {k: v for k, v in (given or {}).items() if v is not None}
        for key in given:
            if key not in self.Options.names():
                raise SmallvisionError(f"strategy {self.name} takes no {flag(key)} "
                                       f"(it is for: {', '.join(takes(key)) or 'none'})")
        options = self.Options.parse(self.name, given)
        self.check_options(options)
        return options

    def check_options(self, options):
        """Checks of complete options that cost more than parsing (e.g. a weights file read), at the
        edge, before any work; default: none."""

    def read_options(self, recorded):
        """The options a run recorded in config.json (older runs: with the defaults of their time)."""
        return self.Options.from_json(recorded)

    def validate(self, options, class_names):
        """Raise ``ValueError`` (one line) on options that cannot work with this data (its
        ``class_names``), before any work is done."""

    def default_image_size(self, options):
        """``(height, width)`` when the user gives none."""
        return DEFAULT_IMAGE_SIZE

    def learning_rate(self, options):
        """The learning rate when the user gives none (it may depend on the options)."""
        return self.default_learning_rate

    def build(self, image_size, num_classes, seed, learning_rate, options=None):
        """The compiled ``keras.Model`` that training fits (its first stage); ``options``: this
        strategy's ``Options`` (None: its defaults)."""
        raise NotImplementedError

    def inputs(self, prep, options, progress=True, seed=0):
        """``{split: array-like}`` the model is fitted on; default: the cached images. An input with
        ``per_epoch = True`` is asked ``take(indices, epoch)`` (e.g. one augmented view per epoch)."""
        return prep.images

    def fill_caches(self, prep, options, progress=True, seed=0):
        """Compute ahead, in as few passes as it can, what this strategy's runs will read from the
        caches; default: nothing ahead (:attr:`fills_caches` says whether it does anything)."""

    fills_caches = False  # True where fill_caches computes something (the ladder calls it first)

    def refit_options(self, options):
        """The options :meth:`build` gets for a refit's final model; default: the run's."""
        return options

    def image_model(self, model, spec, stage):
        """The model saved as model.keras — uint8 images in, probabilities out — from ``model`` as
        trained in the stage named ``stage``; default: as trained."""
        return model

    def pooled_features(self, options):
        """The options of the cached pooled features that equal this run's novelty embedding (a
        frozen base: :mod:`smallvision.novelty` reads them instead of running the network), or
        None: computed from the images."""
        return None

    def deploy_parts(self, model, spec, train_shas=None):
        """``(cached ONNX file of the frozen network, the Keras head on its output)`` when the
        published ``model`` is that network then that head (:mod:`smallvision.deploy` then joins
        the two ONNX graphs instead of converting the whole model: seconds saved, and an int8 run
        deploys the very network its features came from), or None: convert it whole.
        ``train_shas``: the training images' sha256 (an int8 network is named by its calibration)."""
        return None

    def stages(self, spec, num_classes):
        """``[Stage]`` to train through; default: one stage, "train", of ``spec.epochs`` epochs."""
        return [Stage("train", spec.epochs, None)]

    def total_epochs(self, epochs, options):
        """Epochs a run with ``epochs`` (its last stage's) trains in all, every stage counted."""
        return epochs

    def backbone(self, options):
        """The pretrained conv base's registry name, or None (the report's "backbone" column)."""
        return None

    def describe_head(self, options):
        """The classifier on the conv base, as the report names it ("gap, chapter"), or None."""
        return None

    def starts_from(self, options):
        """The trained model a run starts from (a :class:`~smallvision.runs.ModelSource`), or None."""
        return None

    def start_run(self, options):
        """``(strategy, its options)`` of the run this one starts from, read from that run's
        config.json; None when it starts from nothing, or from a model file without its run."""
        source = self.starts_from(options)
        config = source.config if source is not None else None
        if config is None:
            return None
        strat = get(config.strategy)
        return strat, strat.read_options(config.options)

    def in_ladder(self, values, seed, ladder):
        """The options of this strategy's run of ``seed`` in a ladder, from the ladder-wide
        ``values`` ({option: value or None}; those it does not take are left out); ``ladder``
        says which runs the ladder has (``ladder.run(strategy, seed)``, ``ladder.epochs(strategy)``)."""
        names = self.Options.names()
        return self.Options.parse(self.name, {k: v for k, v in values.items() if k in names})

    def cache_options(self, options, ladder):
        """The options :meth:`fill_caches` fills with, ahead of a ladder run of ``options``."""
        return options


class ChapterConvnet(Strategy):
    """The chapter's convnet trained from scratch with RMSprop; a subclass says only how its
    convnet differs (:meth:`convnet_options`)."""

    def convnet_options(self, seed):
        """Keyword arguments of :func:`~smallvision.models.convnet.chapter_convnet`."""
        return {}

    def build(self, image_size, num_classes, seed, learning_rate, options=None):
        import keras

        from ..models.convnet import chapter_convnet
        from ..models.heads import compile_classifier
        model = chapter_convnet(image_size, num_classes, **self.convnet_options(seed))
        return compile_classifier(model, num_classes, keras.optimizers.RMSprop(learning_rate))


def register(cls):
    """Class decorator: one instance of ``cls`` in the registry under ``cls.name``."""
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"strategy name must be new and not empty. Received: name={cls.name!r}")
    _REGISTRY[cls.name] = cls()
    return cls


def get(name):
    """The registered strategy ``name``, or a one-line error listing them."""
    return lookup(_REGISTRY, name, "strategy")


def names():
    """Registered strategy names, in registration order (the chapter's, then extras)."""
    return list(_REGISTRY)


def takes(option):
    """Names of the strategies that take ``option``."""
    return [s.name for s in _REGISTRY.values() if option in s.Options.names()]
