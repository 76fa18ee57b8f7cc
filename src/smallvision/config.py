"""What a run records about itself, as small frozen dataclasses with to/from JSON: the resolved
configuration (``config.json``) and the committed training state (``checkpoint/state.json``).

They replace string-keyed dicts passed between the runner, the trainer, the run folder, the
strategies and the report. The JSON keys are the ones earlier versions wrote, and every
field has a default, so run folders written before these classes existed still resume and
report. Change a field: keep reading the old key.
"""
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
