"""The strategy contract, its defaults, and the registry.

A strategy is a subclass of :class:`Strategy` that sets its name, summary and defaults and
implements :meth:`~Strategy.build`; every other hook has a default here, so the runner,
the ladder and the report call them without probing. ``@register`` puts one instance in
the registry where the class is defined (timm's idea); :func:`get` finds it by name.
"""
import collections

from ..checks import DEFAULT_IMAGE_SIZE, lookup
from ..errors import SmallvisionError

Stage = collections.namedtuple("Stage", "name epochs enter inputs schedule", defaults=(None, None))
Stage.__doc__ = """One stage of training: ``epochs`` epochs; ``enter(model) -> model`` runs once
when the stage begins (None: nothing to change), e.g. fine-tuning's unfreeze; ``inputs(prep,
progress, seed) -> {split: inputs}`` when the stage trains on other inputs than the strategy's
(None: :meth:`Strategy.inputs`), e.g. fine-tuning on cached maps of the base's lower part;
``schedule(k, epochs) -> learning rate`` of the stage's epoch k (0-based) when it is not
constant (None: the compiled one throughout), e.g. the linear head's cosine decay."""

OPTION_NAMES = ("backbone", "head", "classifier", "weights", "views", "start", "head_epochs")  # every strategy option there is

_REGISTRY = {}


class Strategy:
    """Defaults for every hook; a strategy overrides what it needs."""

    name = ""
    summary = ""
    default_epochs = 30
    default_learning_rate = 1e-3
    options = ()  # the option names it accepts, from OPTION_NAMES

    def validate(self, options, class_names):
        """Raise ``ValueError`` (one line) on options that cannot work, before any work is done."""

    def resolve_options(self, options):
        """The options recorded in a new run's config: the given ones, with any default that may
        change between versions filled in (so a resumed run keeps what it was trained with)."""
        return options

    def default_image_size(self, options):
        """``(height, width)`` when the user gives none."""
        return DEFAULT_IMAGE_SIZE

    def learning_rate(self, options):
        """The learning rate when the user gives none (it may depend on the options)."""
        return self.default_learning_rate

    def build(self, image_size, num_classes, seed, learning_rate, options=None):
        """The compiled ``keras.Model`` that training fits."""
        raise NotImplementedError

    def inputs(self, prep, options, progress=True, seed=0):
        """``{split: array-like}`` the model is fitted on; default: the cached images. An input with
        ``per_epoch = True`` is asked ``take(indices, epoch)`` (e.g. one augmented view per epoch)."""
        return prep.images

    def fill_caches(self, prep, options, progress=True, seed=0):
        """Compute ahead, in as few passes as it can, what this strategy's runs will read from the
        caches (the ladder calls it before its first run); default: nothing ahead."""

    def refit_options(self, options):
        """The options :meth:`build` gets for a refit's final model; default: the run's."""
        return options

    def export(self, model, image_size, options):
        """The model saved as model.keras (uint8 images in, probabilities out); default: as trained."""
        return model

    def stages(self, config):
        """``[Stage]`` to train through; default: one stage of ``config.epochs`` epochs."""
        return [Stage("train", config.epochs, None)]

    def backbone(self, options):
        """The pretrained conv base's registry name, or None (the report's "backbone" column)."""
        return None

    def check_options(self, options):
        """Refuse options this strategy does not take, naming the strategies that do."""
        for key in options:
            if key not in self.options:
                users = [s.name for s in _REGISTRY.values() if key in s.options]
                raise SmallvisionError(f"strategy {self.name} takes no --{key.replace('_', '-')} "
                                       f"(it is for: {', '.join(users) or 'none'})")


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
