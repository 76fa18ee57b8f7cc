"""Strategy options as frozen dataclasses: parsed and checked once, at the edge, then carried typed.

Each strategy declares its ``Options`` class (``Strategy.Options``); :meth:`Options.parse` turns
the values a user gave (keywords, CLI flags; None = not given) into a complete, checked object
with every default filled in, and :meth:`Options.from_json` reads what a run recorded in its
``config.json`` (``"options"``) — tolerantly: a key an older version did not write means what
that version did. :meth:`Options.to_json` is the only way back to a dict.

The choices (heads, classifiers, the default backbone) live here, and this module imports no
Keras, so the command line takes its ``choices=`` from here instead of spelling them.
"""
import dataclasses
import os

from ..errors import SmallvisionError

DEFAULT_BACKBONE = "efficientnet_lite0"
HEADS = ("flatten", "gap")
CLASSIFIERS = ("chapter", "linear")
PRECISIONS = ("fp32", "int8")  # the frozen base's arithmetic (int8: ONNX Runtime static quantization)
RECORDED_CLASSIFIER = "chapter"  # what a run recorded before the classifier option existed had
DEFAULT_VIEWS = 10  # measured: bench/RESULTS.md §7 (views 5, 10, 20 and exact, three seeds each)
DEFAULT_HEAD_EPOCHS = 50  # finetune without a start run: the head first, as features-augment trains it


def flag(name):
    """The command line's flag for option ``name``."""
    return {"start": "--from"}.get(name, "--" + name.replace("_", "-"))


@dataclasses.dataclass(frozen=True)
class Options:
    """No options: the convnets trained from scratch."""

    @classmethod
    def names(cls):
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def parse(cls, strategy, given=None):
        """The options of a new run of ``strategy`` (its name) from the values given (None: not
        given), checked, defaults filled in. ``Strategy.parse_options`` refuses the names this
        class does not take first."""
        given = {k: v for k, v in (given or {}).items() if v is not None}
        try:
            return cls._resolve(given, new=True)
        except SmallvisionError:
            raise
        except ValueError as e:
            raise SmallvisionError(f"strategy {strategy}: {e}") from None

    @classmethod
    def from_json(cls, data):
        """What a run recorded (``config.json``'s ``options``), with the defaults of its time."""
        names = cls.names()
        return cls._resolve({k: v for k, v in dict(data or {}).items() if k in names and v is not None}, new=False)

    @classmethod
    def _resolve(cls, given, new):
        return cls(**given)

    def to_json(self):
        """The dict recorded in ``config.json`` (None: not applicable, left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}. Received: {name}={value!r}")


def _weights_path(weights):
    """"imagenet", or a weights file recorded absolute (so that a resume finds it)."""
    return weights if weights == "imagenet" else os.path.abspath(weights)


@dataclasses.dataclass(frozen=True)
class PretrainedOptions(Options):
    """The pretrained strategies': the conv base, its pooling and classifier, its weights."""

    backbone: str | None = DEFAULT_BACKBONE  # a name from ``smallvision backbones``
    head: str | None = None  # "flatten" or "gap"; default: the backbone's
    classifier: str | None = None  # "chapter" or "linear"; default (new runs): the backbone's
    weights: str | None = "imagenet"  # or a weights file
    precision: str | None = "fp32"  # the frozen base's: "int8" quantized, calibrated on training images

    @classmethod
    def _resolve(cls, given, new):
        from ..backbones.registry import get
        o = dict(given)
        o.setdefault("precision", "fp32")  # and a run recorded before the option: fp32
        _check_choice("precision", o["precision"], PRECISIONS)
        backbone = get(o.setdefault("backbone", DEFAULT_BACKBONE))
        o.setdefault("head", backbone.default_head)
        o.setdefault("classifier", backbone.default_classifier if new else RECORDED_CLASSIFIER)
        o["weights"] = _weights_path(o.get("weights", "imagenet")) if new else o.get("weights", "imagenet")
        _check_choice("head", o["head"], HEADS)
        _check_choice("classifier", o["classifier"], CLASSIFIERS)
        return cls(**o)

    @property
    def base(self):
        """The options the frozen conv base depends on (a cache is shared across the others)."""
        return PretrainedOptions(self.backbone, self.head, self.classifier, self.weights, self.precision)


def check_views(v):
    """The ``views`` option: a number of cached views (>= 1) or "exact"."""
    if v == "exact":
        return v
    try:
        n = int(v)
    except (TypeError, ValueError):
        n = 0
    if n < 1 or str(v).strip() != str(n):
        raise ValueError(f"views must be a whole number >= 1 or 'exact'. Received: views={v!r}")
    return n


@dataclasses.dataclass(frozen=True)
class ViewsOptions(PretrainedOptions):
    """features-augment's: the pretrained options and the augmented views cached per image."""

    views: int | str = DEFAULT_VIEWS  # cached views per training image, or "exact" (a fresh one every epoch)

    @classmethod
    def _resolve(cls, given, new):
        o = dict(given)
        views = check_views(o.pop("views", DEFAULT_VIEWS))
        return cls(**dataclasses.asdict(PretrainedOptions._resolve(o, new)), views=views)


@dataclasses.dataclass(frozen=True)
class FinetuneOptions(ViewsOptions):
    """finetune's: a start run to fine-tune (then the base, head and classifier are that run's:
    None here), or else the head's epochs before fine-tuning and the pretrained options."""

    start: str | None = None  # a features-augment (or finetune) run folder or its model.keras, absolute
    head_epochs: int | None = None  # without a start run: epochs of head training first

    @classmethod
    def _resolve(cls, given, new):
        o = dict(given)
        start = o.pop("start", None)
        head_epochs = o.pop("head_epochs", None)
        if head_epochs is not None:
            from ..checks import check_positive
            head_epochs = check_positive("head_epochs", head_epochs, integer=True)
        if start is None:
            views = ViewsOptions._resolve(o, new)
            return cls(**dataclasses.asdict(views), head_epochs=DEFAULT_HEAD_EPOCHS if head_epochs is None
                       else head_epochs)
        if new and "classifier" in o:
            raise ValueError("--classifier is the start run's (its head is fine-tuned); give it to that run")
        views = check_views(o.pop("views", DEFAULT_VIEWS))
        precision = o.pop("precision", "fp32")
        _check_choice("precision", precision, PRECISIONS)
        return cls(backbone=None, head=None, classifier=None, weights=None, precision=precision, views=views,
                   start=os.path.abspath(start) if new else start, head_epochs=head_epochs)
