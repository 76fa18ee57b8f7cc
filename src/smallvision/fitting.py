"""Fitting shared by every strategy: fit with per-epoch checkpoints, early stopping, resume, and
evaluation of the best checkpoint, published with its metrics. Strategies only build and
compile models; the runner's Learner calls this."""
import time

import keras
import numpy as np

from .config import RunState
from .data.dataset import ImageBatches, fit_input
from .labels import as_probabilities
from .metrics import classification_metrics, cross_entropy
from .progress import duration
from .runs import load_model


def load_checkpoint(path):
    """A checkpoint as trained: it may hold smallvision's own training layers
    (:class:`~smallvision.models.augment.RandomChapterAugmentation`), registered with Keras by
    importing their module; the published model.keras never does. It loads in the dtype policy
    it was trained in (:func:`smallvision.mixed.saved_mode`)."""
    from . import mixed
    from .models import augment  # noqa: F401  (registers the layer)
    with mixed.scope(mixed.saved_mode(path)):
        return load_model(path)


class RunRecorder(keras.callbacks.Callback):
    """After every epoch: history row, last checkpoint, best checkpoint (on val_loss), commit.

    Also early stopping on val_loss (``patience`` epochs without improvement), kept in the
    committed state so that a resumed run counts on where it stopped.
    """

    def __init__(self, run, history, state, patience=None, log=None):
        super().__init__()
        self.run, self.history, self.state = run, history, state
        self.patience = patience
        self.log = log

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        done = epoch + 1
        row = {"epoch": done, "seconds": round(time.perf_counter() - self.t0, 3)}
        row.update({k: float(v) for k, v in logs.items() if np.ndim(v) == 0})
        self.history.append(row)
        state = self.state.with_(epochs_done=done, last=f"last-{done:04d}.keras")
        self.run.save_model(self.model, "checkpoint", state.last)
        val_loss = row.get("val_loss", row.get("loss"))
        if state.best_val_loss is None or val_loss < state.best_val_loss:
            state = state.with_(best=f"best-{done:04d}.keras", best_epoch=done, best_val_loss=val_loss, wait=0)
            self.run.copy_file(("checkpoint", state.last), ("checkpoint", state.best))  # the same model: no 2nd save
        else:
            state = state.with_(wait=state.wait + 1)
        if self.patience and state.wait >= self.patience:
            state = state.with_(stopped_early=True)
            self.model.stop_training = True
        self.run.write_history(self.history)
        self.run.commit_epoch(state)
        self.state = state
        if self.log:
            extra = "  (early stop)" if state.stopped_early else ""
            left = self.params.get("epochs", done) - done
            if left > 0 and not state.stopped_early:
                mean = sum(r["seconds"] for r in self.history[-5:]) / len(self.history[-5:])
                extra += f"  ETA {duration(mean * left)}"
            best = f"  best epoch {state.best_epoch}" if "val_loss" in row else ""  # a refit validates nothing
            self.log(f"epoch {done}: " + "  ".join(f"{k} {row[k]:.4f}" for k in
                     ("loss", "accuracy", "val_loss", "val_accuracy") if k in row) + f"{best}{extra}")


def fit(model, run, train_ds, val_ds, epochs, state=None, patience=None, verbose="auto", log=None, schedule=None):
    """Fit ``model`` from the committed ``state`` (None: from scratch) up to ``epochs``;
    ``schedule(epoch) -> learning rate`` (0-based, counted over the whole run) when not constant.

    Returns the final committed :class:`~smallvision.config.RunState`.
    """
    state = state or RunState()
    initial = state.epochs_done
    history = run.read_history()[:initial]
    recorder = RunRecorder(run, history, state, patience=patience, log=log)
    if initial < epochs and not state.stopped_early:
        train_ds.set_epoch(initial)
        x, feed = fit_input(train_ds)
        val = fit_input(val_ds)[0] if val_ds is not None else None
        if schedule is not None:  # set before each epoch from its number alone: a resume gets the same rates
            feed = feed + [keras.callbacks.LearningRateScheduler(lambda epoch, lr: float(schedule(epoch)))]
        model.fit(x, validation_data=val, epochs=epochs, initial_epoch=initial, shuffle=False,
                  callbacks=feed + [recorder], verbose=verbose)
    return recorder.state


def predict_probabilities(model, images, num_classes, batch_size=32):
    """``[n, num_classes]`` probabilities of ``model`` on uint8 images (array or cache view)."""
    if len(images) == 0:
        return np.zeros((0, num_classes))
    ds = ImageBatches(images, np.zeros(len(images), dtype=np.int64), num_classes, batch_size=batch_size)
    return as_probabilities(model.predict(fit_input(ds)[0], verbose=0), num_classes)


def finish(run, state, evaluation_sets, class_names, batch_size=32, image_model=None, model_file="model.keras"):
    """Evaluate the best checkpoint, publish it as ``model_file``, write every prediction; a
    checkpoint trained in mixed precision is evaluated and published in float32.

    Args:
        evaluation_sets: ``{"validation": (inputs, labels, paths), "test": (...)}``, the
            inputs being what the model was trained on (images, or cached features).
        image_model: optional ``model -> keras.Model`` that turns the trained model into the one
            saved (uint8 images in, probabilities out: e.g. base + head for feature extraction);
            default: the checkpoint as is.

    Returns:
        The metrics dict written to ``metrics.json``.
    """
    from .mixed import as_float32
    best = run.file("checkpoint", state.best)
    trained = load_checkpoint(best)
    model = as_float32(trained)  # trained in mixed precision: evaluated and published in float32
    exported = image_model(model) if image_model is not None else model
    if exported is trained:  # saved as trained: the checkpoint file is the model file
        run.copy_file(("checkpoint", state.best), (model_file,))
    else:
        run.save_model(exported, model_file)
    total = exported.count_params()
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    metrics = {"best_epoch": state.best_epoch, "epochs_done": state.epochs_done,
               "stopped_early": bool(state.stopped_early),
               "params": {"trainable": trainable, "total": int(total)}}
    if len(state.stages) > 1:
        metrics["stages"] = state.stages  # stage name -> its first epoch
    rows = []
    for name, (images, labels, paths) in evaluation_sets.items():
        if len(labels):
            probs = predict_probabilities(model, images, len(class_names), batch_size)
            metrics[name] = classification_metrics(probs, labels, class_names)
            rows += prediction_rows(name, paths, labels, probs, class_names)
    run.write_predictions(rows)
    run.write_metrics(metrics)
    return metrics


def publish_refit(run, final, exported, test_set, class_names, batch_size, refit):
    """After :func:`finish` (which published the selection model as ``selection.keras``): publish
    the refitted ``final`` model (``exported``: as saved) as ``model.keras``, and its test figures.

    ``metrics.json`` then holds ``selection`` (the model chosen on validation: best epoch,
    validation and test), ``refit`` (how the final model was trained) and, at the top level,
    ``test`` of the final model; ``validation`` stays the selection model's (the final model
    learnt from those images). ``predictions.csv``: validation rows from the selection model,
    test rows from the final one.
    """
    metrics = run.metrics.to_json()  # the file, extended
    metrics["selection"] = {"model": "selection.keras", "best_epoch": metrics["best_epoch"],
                            **{k: metrics[k] for k in ("validation", "test") if k in metrics}}
    metrics["refit"] = dict(refit, model="model.keras")
    images, labels, paths = test_set
    rows = [r for r in run.read_csv("predictions.csv") if r["split"] != "test"]
    if len(labels):
        probs = predict_probabilities(final, images, len(class_names), batch_size)
        metrics["test"] = classification_metrics(probs, labels, class_names)
        rows += prediction_rows("test", paths, labels, probs, class_names)
    run.save_model(exported, "model.keras")
    run.write_predictions(rows)
    run.write_metrics(metrics)
    return metrics


def prediction_rows(split, paths, labels, probs, class_names):
    """One row per image: split, path, true and predicted class, their probabilities, loss."""
    pred = probs.argmax(axis=1)
    p_true = probs[np.arange(len(labels)), labels]
    loss = cross_entropy(probs, labels)
    return [{"split": split, "path": path, "true": class_names[t], "predicted": class_names[p],
             "probability": round(float(probs[i, p]), 5), "p_true": round(float(p_true[i]), 5),
             "loss": round(float(loss[i]), 5)}
            for i, (path, t, p) in enumerate(zip(paths, labels, pred))]
