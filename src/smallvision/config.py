"""What a run records about itself, as small frozen dataclasses with to/from JSON: the resolved
configuration (``config.json``), the committed training state (``checkpoint/state.json``), its
status (``run.json``), its figures (``metrics.json``), and a ladder's folder (``ladder.json``).

They replace string-keyed dicts passed between the runner, the trainer, the run folder, the
strategies and the report. The JSON keys are the ones earlier versions wrote, and every
field has a default, so run folders written before these classes existed still resume and
report. Change a field: keep reading the old key.
"""
import collections.abc
import copy
import dataclasses
import platform

from .checks import DEFAULT_SPLIT


def _known(cls, data):
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything needed to reproduce (or resume) a run."""

    strategy: str
    data: str  # absolute path of the data folder (``resume --data`` may point elsewhere)
    image_size: tuple  # (height, width)
    crop_to_aspect: bool = False
    decode: str = ""  # the decode cache's key (size, method, decoder version)
    epochs: int = 1  # of the last stage (finetune: its fine-tuning stage)
    batch_size: int = 32
    learning_rate: float = 1e-3
    optimizer: str = "rmsprop"
    seed: int = 0
    patience: int | None = None
    class_weight: str | None = None  # None or "balanced"
    class_weights: dict | None = None  # {class index: weight} when balanced
    split: tuple = DEFAULT_SPLIT
    split_origin: str = ""
    class_names: tuple = ()
    counts: dict = dataclasses.field(default_factory=dict)  # {split: [count per class]}
    data_index_sha256: str = ""
    rejected: int = 0
    duplicates: int = 0
    options: dict = dataclasses.field(default_factory=dict)  # strategy options (backbone, head, weights, start, …)
    refit: bool = False  # after selection on validation, the final model trains on train + validation
    devices: dict = dataclasses.field(default_factory=dict)  # distribute.Devices.to_json(); {}: one (older runs)
    mixed_precision: str = "off"  # what it trains in, resolved (smallvision.mixed: off, float16, bfloat16)
    versions: dict = dataclasses.field(default_factory=dict)

    @property
    def num_classes(self):
        return len(self.class_names)

    def with_(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_json(self):
        d = dataclasses.asdict(self)
        d.update(image_size=list(self.image_size), split=list(self.split), class_names=list(self.class_names))
        if self.class_weights is not None:
            d["class_weights"] = {str(k): v for k, v in self.class_weights.items()}
        return d

    @classmethod
    def from_json(cls, data):
        d = _known(cls, data)
        d["image_size"] = tuple(int(v) for v in d["image_size"])
        d["split"] = tuple(float(v) for v in d.get("split", cls.split))
        d["class_names"] = tuple(d.get("class_names", ()))
        if d.get("class_weights"):
            d["class_weights"] = {int(k): float(v) for k, v in d["class_weights"].items()}
        d["options"] = dict(d.get("options") or {})
        d["devices"] = dict(d.get("devices") or {})
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class RunState:
    """The last committed epoch: what ``--resume`` continues from."""

    epochs_done: int = 0
    wait: int = 0  # epochs since the best val_loss (early stopping)
    last: str | None = None  # checkpoint file names under checkpoint/
    best: str | None = None
    best_epoch: int | None = None
    best_val_loss: float | None = None
    stopped_early: bool = False
    stage: int = -1  # index of the stage being trained (-1: none entered yet)
    stage_start: int = 0  # epochs done when that stage began
    stages: dict = dataclasses.field(default_factory=dict)  # {stage name: its first epoch}

    def with_(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_json(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data):
        d = _known(cls, data)
        d["stages"] = dict(d.get("stages") or {})
        return cls(**d)


def versions():
    """Package and backend versions, recorded in every run's config."""
    import cv2
    import keras
    import numpy as np
    import PIL

    from . import __version__

    backend = keras.backend.backend()
    try:
        backend_version = __import__({"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}
                                     .get(backend, backend)).__version__
    except Exception:
        backend_version = "unknown"
    return {"smallvision": __version__, "python": platform.python_version(), "platform": platform.platform(),
            "keras": keras.__version__, "backend": backend, "backend_version": backend_version,
            "numpy": np.__version__, "pillow": PIL.__version__, "opencv": cv2.__version__}


@dataclasses.dataclass(frozen=True)
class RunStatus:
    """``run.json``: where a run stands (written at every change of status)."""

    status: str = ""  # "running", "interrupted", "failed" or "finished" ("": nothing written yet)
    started: str | None = None  # ISO times
    resumed: str | None = None
    interrupted: str | None = None
    finished: str | None = None
    error: str | None = None  # what failed
    best_epoch: int | None = None
    epochs_done: int | None = None
    wall_seconds: float = 0.0  # across the processes that trained it (a killed one's share is missing)

    @property
    def is_finished(self):
        return self.status == "finished"

    def with_(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_json(self):
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data):
        return cls(**_known(cls, data or {}))


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """The figures of one model on one split (``metrics.classification_metrics``)."""

    n: int = 0
    loss: float | None = None
    accuracy: float | None = None
    confusion_matrix: tuple = ()
    per_class: dict = dataclasses.field(default_factory=dict)  # {class: {precision, recall, f1, support}}

    @classmethod
    def from_json(cls, data):
        return None if data is None else cls(**_known(cls, data))


@dataclasses.dataclass(frozen=True)
class Selection:
    """The model chosen on validation when a refit trained the final one (``metrics.json``'s
    ``selection``): its file, best epoch and figures."""

    model: str = "selection.keras"
    best_epoch: int | None = None
    validation: Evaluation | None = None
    test: Evaluation | None = None


@dataclasses.dataclass(frozen=True)
class Metrics(collections.abc.Mapping):
    """``metrics.json``: the published model's figures. With a refit, ``validation`` is the
    selection model's and ``test`` the final model's; :attr:`chosen` is the model chosen on
    validation either way."""

    best_epoch: int = 0
    epochs_done: int = 0
    stopped_early: bool = False
    params: dict = dataclasses.field(default_factory=dict)  # {"trainable": n, "total": n}
    stages: dict | None = None  # {stage name: its first epoch} when there are several
    validation: Evaluation | None = None
    test: Evaluation | None = None
    selection: Selection | None = None  # with a refit
    refit: dict | None = None  # with a refit: epochs, stages, trained_on, images, model
    raw: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)  # the file as read

    @property
    def chosen(self):
        """The model chosen on validation: the selection (with a refit) or this one."""
        return self.selection or Selection("model.keras", self.best_epoch, self.validation, self.test)

    # read-only Mapping over the file's JSON, for scripts written against the dict
    # (``run.metrics["test"]["accuracy"]``); smallvision itself reads the fields
    def __getitem__(self, key):
        return self.raw[key]

    def __iter__(self):
        return iter(self.raw)

    def __len__(self):
        return len(self.raw)

    def to_json(self):
        return copy.deepcopy(self.raw)

    @classmethod
    def from_json(cls, data):
        d = _known(cls, data)
        for split in ("validation", "test"):
            d[split] = Evaluation.from_json(d.get(split))
        if d.get("selection") is not None:
            s = d["selection"]
            d["selection"] = Selection(model=s.get("model", "selection.keras"), best_epoch=s.get("best_epoch"),
                                       validation=Evaluation.from_json(s.get("validation")),
                                       test=Evaluation.from_json(s.get("test")))
        d.pop("raw", None)
        return cls(**d, raw=copy.deepcopy(data))


@dataclasses.dataclass(frozen=True)
class LadderRecord:
    """``ladder.json``: a ladder folder's fixed settings (a re-run must give the same ones) and its
    run names in order."""

    data: str  # absolute path of the data folder
    image_size: tuple
    backbone: str
    epochs_scale: float = 1.0
    batch_size: int = 32
    split: str = ""
    patience: int | None = None
    classifier: str | None = None  # None: each strategy's default (before the setting existed: the same)
    refit: bool = False  # before the setting existed: no refit
    runs: tuple = ()

    SETTINGS = ("data", "image_size", "backbone", "epochs_scale", "batch_size", "split", "patience", "classifier",
                "refit")

    def with_(self, **changes):
        return dataclasses.replace(self, **changes)

    def differs(self, other):
        """The first fixed setting in which ``other`` differs from this: (name, this value, other), or None."""
        for name in self.SETTINGS:
            if getattr(self, name) != getattr(other, name):
                return name, getattr(self, name), getattr(other, name)
        return None

    def to_json(self):
        d = dataclasses.asdict(self)
        return dict(d, image_size=list(self.image_size), runs=list(self.runs))

    @classmethod
    def from_json(cls, data):
        d = _known(cls, data)
        d["image_size"] = tuple(int(v) for v in d["image_size"])
        d["runs"] = tuple(d.get("runs") or ())
        return cls(**d)
