"""What a run trains, in one frozen dataclass: :class:`TrainSpec`, checked once at the edge.

``runner.train(data, spec)`` takes one (or the same settings as keywords); the ladder builds one
per run; the strategies' hooks read it. A run records it in ``config.json`` (``RunConfig``, with
what the data adds), and :meth:`TrainSpec.from_config` reads it back for a resume or a report.
"""
import dataclasses

from ..checks import DEFAULT_SPLIT, check_choice, check_positive, check_seed, image_size as parse_image_size, \
    split_fractions
from .. import mixed
from ..errors import SmallvisionError
from .base import get, names, takes
from .options import Options


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """Everything that says how a run trains (the data aside). Build one with :meth:`parse`."""

    strategy: str
    epochs: int  # of the last stage (finetune: its fine-tuning stage)
    image_size: tuple  # (height, width)
    learning_rate: float
    options: Options  # the strategy's Options, complete
    batch_size: int = 32
    crop_to_aspect: bool = False
    seed: int = 0
    patience: int | None = None  # stop after this many epochs without a better val_loss
    class_weight: str | None = None  # None or "balanced"
    split: tuple = DEFAULT_SPLIT  # train, validation, test fractions without split folders
    refit: bool = False  # after selection on validation, the final model trains on train + validation
    mixed_precision: str = "auto"  # smallvision.mixed: auto, off, float16, bfloat16 (a run records it resolved)

    # the keywords of parse() besides strategy and the options
    SETTINGS = ("epochs", "batch_size", "image_size", "crop_to_aspect", "seed", "learning_rate", "patience",
                "class_weight", "split", "refit", "mixed_precision")

    @classmethod
    def parse(cls, strategy="scratch", *, epochs=None, batch_size=32, image_size=None, crop_to_aspect=False, seed=0,
              learning_rate=None, patience=None, class_weight=None, split=DEFAULT_SPLIT, refit=False,
              mixed_precision="auto", options=None, **values):
        """A complete, checked spec from what a user gives (None: the default). ``values``: the
        strategy's option values by name (backbone, head, classifier, weights, views, start,
        head_epochs); one the strategy does not take is refused in one line. Or ``options``:
        the strategy's complete ``Options`` (checked again)."""
        strat = get(strategy)
        for key in values:
            if not takes(key):
                raise SmallvisionError(f"unknown training setting {key!r}; expected some of: "
                                       f"{', '.join(cls.SETTINGS + tuple(_all_options()))}")
        if options is not None:
            if values or not isinstance(options, strat.Options):
                raise SmallvisionError(f"options must be the {strat.name} strategy's {strat.Options.__name__} "
                                       "(and no option values beside it)")
            strat.check_options(options)
            opts = options
        else:
            opts = strat.parse_options(values)
        epochs = check_positive("epochs", strat.default_epochs if epochs is None else epochs, integer=True)
        batch_size = check_positive("batch_size", batch_size, integer=True)
        patience = check_positive("patience", patience, integer=True, allow_none=True)
        seed = check_seed(seed)
        class_weight = None if class_weight == "none" else check_choice("class_weight", class_weight,
                                                                        (None, "balanced"))
        fractions = split_fractions(split)
        try:
            size = parse_image_size(strat.default_image_size(opts) if image_size is None else image_size)
            learning_rate = float(check_positive("learning_rate", strat.learning_rate(opts) if learning_rate is None
                                                 else learning_rate))
        except SmallvisionError:
            raise
        except ValueError as e:
            raise SmallvisionError(f"strategy {strat.name}: {e}") from None
        return cls(strategy=strat.name, epochs=epochs, image_size=size, learning_rate=learning_rate, options=opts,
                   batch_size=batch_size, crop_to_aspect=bool(crop_to_aspect), seed=seed, patience=patience,
                   class_weight=class_weight, split=fractions, refit=bool(refit),
                   mixed_precision=mixed.parse(mixed_precision))

    @classmethod
    def from_config(cls, config):
        """The spec a run recorded (a :class:`~smallvision.config.RunConfig`)."""
        return cls(strategy=config.strategy, epochs=config.epochs, image_size=tuple(config.image_size),
                   learning_rate=config.learning_rate, options=get(config.strategy).read_options(config.options),
                   batch_size=config.batch_size, crop_to_aspect=config.crop_to_aspect, seed=config.seed,
                   patience=config.patience, class_weight=config.class_weight, split=tuple(config.split),
                   refit=config.refit, mixed_precision=config.mixed_precision)

    def with_(self, **changes):
        """The same spec with some settings, its options or some option values changed, checked
        again (another strategy: its options from the values given alone)."""
        strategy = changes.pop("strategy", self.strategy)
        settings = {name: changes.pop(name, getattr(self, name)) for name in self.SETTINGS}
        if "options" in changes or strategy != self.strategy:
            return TrainSpec.parse(strategy, **settings, **changes)
        if changes:  # option values, on top of this spec's options
            return TrainSpec.parse(strategy, **settings, **{**self.options.to_json(), **changes})
        return TrainSpec.parse(strategy, **settings, options=self.options)


def _all_options():
    seen = []
    for name in names():
        seen += [o for o in get(name).Options.names() if o not in seen]
    return seen
