"""The run folder: everything one training writes, written atomically, and read back.

::

    runs/<YYYYmmdd-HHMMSS>-<strategy>/
      run.json          status (running / interrupted / failed / finished), times, best epoch
      config.json       resolved configuration, seed, package versions, data-index hash
      index.csv         every image used: path, class, split, sha256, bytes, width, height, format
      rejects.csv       files that were not used, and why
      warnings.csv      files used with a remark (wrong extension, several frames, ...)
      duplicates.csv    identical files (leakage across splits, conflicting labels)
      history.csv       one row per epoch: loss, accuracy, val_loss, val_accuracy, seconds
      checkpoint/       state.json + last-NNNN.keras + best-NNNN.keras (what --resume uses)
      model.keras       the best model (lowest val_loss); plain keras.saving.load_model opens it
                        (with --refit: the final model, retrained on train + validation)
      selection.keras   with --refit: the model chosen on validation (refit/: the final one's
                        checkpoints, history and plan, resumable like the run)
      metrics.json      validation and test: loss, accuracy, per-class precision/recall, confusion,
                        trainable/total parameters, stage starts (finetune)
      predictions.csv   every validation and test image: true, predicted, probability, loss
      curves.png        training vs validation loss and accuracy

Every file is written to a temporary name and renamed, and ``checkpoint/state.json`` is
the commit point of an epoch: a run killed at any moment resumes from the last epoch
whose state was committed, and never reads a half-written file.
"""
import csv
import datetime
import io
import os
import shutil

from ._io import read_json, write_json_atomic, write_text_atomic
from .config import Metrics, RunConfig, RunState, RunStatus
from .errors import SmallvisionError


def _csv_text(header, rows):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


class Run:
    """A run folder. Create one with :meth:`create`, open an existing one with :meth:`open`."""

    def __init__(self, path):
        self.path = os.fspath(path)

    def file(self, *names):
        return os.path.join(self.path, *names)

    @classmethod
    def create(cls, out_dir, strategy, now=None):
        now = now or datetime.datetime.now()
        base = f"{now:%Y%m%d-%H%M%S}-{strategy}"
        os.makedirs(out_dir, exist_ok=True)
        for k in range(1000):
            path = os.path.join(out_dir, base if k == 0 else f"{base}-{k}")
            try:
                os.makedirs(path)
                return cls(path)
            except FileExistsError:
                continue
        raise SmallvisionError(f"{out_dir}: cannot create a new run folder named {base}")

    @classmethod
    def create_at(cls, path):
        """A run folder at exactly ``path`` (a ladder names its runs); it must not exist yet."""
        try:
            os.makedirs(path)
        except FileExistsError:
            raise SmallvisionError(f"{path}: already exists; resume it or choose another folder") from None
        return cls(path)

    @classmethod
    def open(cls, path):
        run = cls(path)
        if not os.path.isfile(run.file("config.json")):
            what = "no such folder" if not os.path.exists(path) else "not a smallvision run folder (no config.json)"
            raise SmallvisionError(f"{path}: {what}")
        return run

    @property
    def name(self):
        return os.path.basename(os.path.normpath(self.path))

    # -- JSON files ---------------------------------------------------------------------------
    @property
    def config(self):
        """The run's :class:`~smallvision.config.RunConfig` (read from config.json each time)."""
        return RunConfig.from_json(read_json(self.file("config.json")))

    def write_config(self, config):
        write_json_atomic(self.file("config.json"), config.to_json())

    @property
    def status(self):
        """``run.json`` as a :class:`~smallvision.config.RunStatus` (empty when missing or unreadable)."""
        try:
            return RunStatus.from_json(read_json(self.file("run.json")))
        except (OSError, ValueError, TypeError):
            return RunStatus()

    def set_status(self, **fields):
        write_json_atomic(self.file("run.json"), self.status.with_(**fields).to_json())

    @property
    def metrics(self):
        """``metrics.json`` as :class:`~smallvision.config.Metrics`."""
        return Metrics.from_json(read_json(self.file("metrics.json")))

    def write_metrics(self, metrics):
        write_json_atomic(self.file("metrics.json"), metrics)

    # -- data files -----------------------------------------------------------------------------
    def write_data_files(self, index, splits):
        split_of = {p: name for name, ps in splits.items() for p in ps}
        names = index.class_names
        write_text_atomic(self.file("index.csv"), _csv_text(
            ["path", "class", "split", "sha256", "bytes", "width", "height", "format"],
            [[e.path, names[e.label], split_of.get(p, ""), e.sha256, e.bytes, e.width, e.height, e.format]
             for p, e in enumerate(index.entries)]))
        write_text_atomic(self.file("rejects.csv"), _csv_text(["path", "reason"], index.rejects))
        write_text_atomic(self.file("warnings.csv"), _csv_text(["path", "warning"], index.warnings))
        write_text_atomic(self.file("duplicates.csv"), _csv_text(
            ["sha256", "kind", "files", "splits", "classes"],
            [[d["sha256"], d["kind"], " ".join(d["files"]), " ".join(d["splits"]), " ".join(d["classes"])]
             for d in splits.duplicates]))

    # -- history ----------------------------------------------------------------------------------
    def write_predictions(self, rows):
        keys = ["split", "path", "true", "predicted", "probability", "p_true", "loss"]
        write_text_atomic(self.file("predictions.csv"), _csv_text(keys, [[r[k] for k in keys] for r in rows]))

    def read_csv(self, name):
        """Rows (dicts of strings) of one of the run's CSV files; [] when it is absent."""
        try:
            with open(self.file(name), encoding="utf-8", newline="") as f:
                return list(csv.DictReader(f))
        except OSError:
            return []

    def read_predictions(self):
        """Rows of ``predictions.csv`` (validation and test images), numbers as floats."""
        rows = self.read_csv("predictions.csv")
        for r in rows:
            for k in ("probability", "p_true", "loss"):
                r[k] = float(r[k])
        return rows

    def read_history(self):
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in r.items() if v != ""}
                for r in self.read_csv("history.csv")]

    def write_history(self, rows):
        keys = ["epoch"] + sorted({k for r in rows for k in r} - {"epoch"})
        write_text_atomic(self.file("history.csv"), _csv_text(keys, [[r.get(k, "") for k in keys] for r in rows]))

    # -- checkpoints ------------------------------------------------------------------------------
    @property
    def state(self):
        """The last committed epoch (:class:`~smallvision.config.RunState`), or None before the first."""
        try:
            return RunState.from_json(read_json(self.file("checkpoint", "state.json")))
        except (OSError, ValueError, TypeError):
            return None

    def commit_epoch(self, state):
        """Make ``state`` the run's committed epoch, then drop checkpoints it no longer names."""
        write_json_atomic(self.file("checkpoint", "state.json"), state.to_json())
        keep = {state.last, state.best}
        for name in os.listdir(self.file("checkpoint")):
            if name.endswith(".keras") and name not in keep:
                try:
                    os.unlink(self.file("checkpoint", name))
                except OSError:
                    pass

    def save_model(self, model, *names):
        """``model.save`` to a temporary name, then rename over ``names``."""
        path = self.file(*names)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = os.path.join(os.path.dirname(path), f".tmp-{os.getpid()}-{os.path.basename(path)}")
        try:
            model.save(tmp)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):  # a disk that filled up mid-save leaves no litter behind
                os.unlink(tmp)
            raise
        return path

    def copy_file(self, source, target):
        """Copy run file ``source`` to ``target`` (name tuples), atomically."""
        path = self.file(*target)
        tmp = os.path.join(os.path.dirname(path), f".tmp-{os.getpid()}-{os.path.basename(path)}")
        try:
            shutil.copyfile(self.file(*source), tmp)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    @property
    def model_path(self):
        return self.file("model.keras")


# -- "a run folder or a model file": one resolver, one loader ---------------------------------------

class ModelSource:
    """Where a trained model is: ``model_path`` (a .keras file) and the run it belongs to, if any;
    ``selection_path``: for a refit run folder its ``selection.keras`` (the model chosen on
    validation, before the refit on train + validation), else ``model_path``."""

    def __init__(self, model_path, run=None, selection_path=None):
        self.model_path, self.run = model_path, run
        self.selection_path = selection_path or model_path

    @property
    def config(self):
        """The run's RunConfig, or None for a bare model file."""
        return self.run.config if self.run is not None else None


def resolve_model(source):
    """A run folder, a model.keras inside one, or a bare .keras file -> :class:`ModelSource`,
    checked (without loading the model) with a one-line error naming ``source``."""
    source = os.fspath(source)
    if os.path.isdir(source):
        run = Run.open(source)
        if not os.path.isfile(run.model_path):
            raise SmallvisionError(f"{source}: run has no model.keras yet (status: {run.status.status or '?'})")
        selection = run.file("selection.keras")
        return ModelSource(run.model_path, run, selection if os.path.isfile(selection) else None)
    if not os.path.exists(source):
        raise SmallvisionError(f"{source}: no such run folder or model file")
    if not os.path.isfile(source) or not source.endswith(".keras"):
        raise SmallvisionError(f"{source}: expected a run folder or a .keras model file")
    folder = os.path.dirname(os.path.abspath(source))
    run = Run(folder) if os.path.isfile(os.path.join(folder, "config.json")) else None
    return ModelSource(source, run)


def load_model(path):
    """Open a saved ``.keras`` model with Keras' safe mode on (a Lambda layer or pickled code is
    refused); a one-line error naming the file when it cannot be used."""
    import keras

    path = os.fspath(path)
    if not path.endswith(".keras"):  # legacy .h5 / SavedModel: not what smallvision writes
        raise SmallvisionError(f"{path}: expected a .keras model file")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SmallvisionError(f"{path}: cannot load the model: {msg}") from None
