"""The pretrained strategies' classifier (the chapter's head or a linear one) and ``--refit``
(the final model retrained on train + validation for the epoch chosen on validation): the
linear head reaches a logistic regression's optimum, a refit run keeps both models and their
figures, resumes after an interruption, and in a ladder fine-tunes the right start model."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from smallvision import api, runner, strategies
from smallvision.errors import SmallvisionError
from smallvision.models.walk import leaves
from smallvision.runs import Run
from smallvision.strategies import pretrained
from smallvision.strategies.base import Stage
from smallvision.config import RunState
from conftest import make_folder

TINY = dict(image_size=64, head="gap", split="0.5,0.25,0.25", verbose=0, progress=False)


def test_the_linear_head_reaches_the_logistic_regressions_optimum():
    """Same objective (mean log loss + LINEAR_L2 * |w|^2, the bias free) as scikit-learn's
    LogisticRegression with C = 1 / (2 * LINEAR_L2 * n): within 0.5 % of its optimum, and the
    same probabilities (0.03 at most, 0.01 on average), after 20 epochs with the head's learning rate and its decay."""
    from sklearn.linear_model import LogisticRegression
    rng = np.random.default_rng(0)
    n, d = 2000, 32  # as many rows as the chapter's training set
    y = rng.integers(0, 2, n)
    x = (rng.normal(size=(n, d)) + 0.15 * (2 * y[:, None] - 1) * rng.normal(size=d)).astype("float32")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((d,))
    from smallvision.strategies.options import PretrainedOptions
    options = PretrainedOptions(classifier="linear", head="gap")
    model = pretrained.classifier(inputs, inputs, options, 2, pretrained.LINEAR_LEARNING_RATE, "lin")
    assert [layer.name for layer in model.layers[1:]] == ["predictions"]
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    schedule = pretrained.head_schedule(options, pretrained.LINEAR_LEARNING_RATE)
    model.fit(x, y, batch_size=32, epochs=20, verbose=0, shuffle=True,
              callbacks=[keras.callbacks.LearningRateScheduler(lambda k, lr: schedule(k, 20))])

    def objective(w, b):
        z = x @ w + b
        return np.mean(np.logaddexp(0, z) - y * z) + pretrained.LINEAR_L2 * float(w @ w)

    w, b = (np.asarray(v, dtype=np.float64).ravel() for v in model.get_layer("predictions").get_weights())
    lr = LogisticRegression(C=1 / (2 * pretrained.LINEAR_L2 * n), tol=1e-10, max_iter=10000).fit(x, y)
    best = objective(lr.coef_.ravel(), lr.intercept_[0])
    assert best <= objective(w, b[0]) <= best * 1.005
    diff = np.abs(model.predict(x, verbose=0)[:, 0] - lr.predict_proba(x)[:, 1])
    assert diff.max() < 0.03 and diff.mean() < 0.01
    assert pretrained.head_schedule(options.replace(classifier="chapter"), 1e-3) is None  # the chapter's constant rate


def test_classifier_option_is_recorded_and_refused_where_it_means_nothing(tiny_data, tmp_path):
    run = api.train(tiny_data, "features", out=tmp_path / "runs", epochs=1, classifier="linear", **TINY)
    assert run.config.options["classifier"] == "linear"
    assert run.config.learning_rate == pretrained.LINEAR_LEARNING_RATE and run.config.optimizer == "adam"
    head = keras.saving.load_model(run.file("checkpoint", run.state.best))
    assert [layer.name for layer in head.layers[1:]] == ["predictions"]
    assert head.get_layer("predictions").kernel_regularizer.l2 == pytest.approx(pretrained.LINEAR_L2)
    with pytest.raises(SmallvisionError, match="strategy scratch takes no --classifier"):
        api.train(tiny_data, "scratch", out=tmp_path / "runs", classifier="linear", progress=False)
    with pytest.raises(SmallvisionError, match=r"classifier must be one of \('chapter', 'linear'\)"):
        api.train(tiny_data, "features", out=tmp_path / "runs", classifier="forest", progress=False)
    with pytest.raises(SmallvisionError, match="--classifier is the start run's"):
        api.train(tiny_data, "finetune", out=tmp_path / "runs", start=run.path, classifier="chapter", progress=False)


def test_a_new_run_records_its_backbones_default_classifier(tiny_data, tmp_path, monkeypatch):
    import dataclasses

    from smallvision.backbones import registry
    lite0 = registry.BACKBONES["efficientnet_lite0"]
    assert lite0.default_classifier == "chapter" and registry.get("efficientnet_lite2").default_classifier == "linear"
    monkeypatch.setitem(registry.BACKBONES, "efficientnet_lite0", dataclasses.replace(lite0, default_classifier="linear"))
    run = api.train(tiny_data, "features", out=tmp_path / "runs", epochs=1, **TINY)
    assert run.config.options["classifier"] == "linear"
    # a run recorded before the option existed was trained with the chapter's head, whatever the default now
    assert strategies.get("features").read_options({"backbone": "efficientnet_lite0"}).classifier == "chapter"


def test_refit_stages_follow_the_selection_up_to_the_chosen_epoch():
    stages = [Stage("head", 3, None), Stage("finetune", 4, None)]
    state = RunState(epochs_done=7, stages={"head": 1, "finetune": 4}, best_epoch=5)
    assert [(s.name, s.epochs) for s in runner.refit_stages(stages, state)] == [("head", 3), ("finetune", 2)]
    assert [(s.name, s.epochs) for s in runner.refit_stages(stages, state.with_(best_epoch=2))] == [("head", 2)]
    # the head stage stopped early after 2 epochs (patience): the refit's head stage is as long
    early = RunState(epochs_done=6, stages={"head": 1, "finetune": 3}, best_epoch=6)
    assert [(s.name, s.epochs) for s in runner.refit_stages(stages, early)] == [("head", 2), ("finetune", 4)]
    one = [Stage("train", 20, None)]
    assert [(s.name, s.epochs) for s in runner.refit_stages(one, RunState(epochs_done=20, stages={"train": 1},
                                                                           best_epoch=7))] == [("train", 7)]


def _kernel(model):
    """The output layer's kernel, wherever it is nested."""
    return [layer for layer in leaves(model) if layer.name == "predictions"][0].get_weights()[0]


def _predictions(run, split):
    return {r["path"]: float(r["p_true"]) for r in run.read_predictions() if r["split"] == split}


@pytest.mark.slow  # default tier under 5 minutes: CI's extended tier runs it
def test_refit_keeps_both_models_and_says_which_figure_is_which(tiny_data, tmp_path):
    run = api.train(tiny_data, "features", out=tmp_path / "runs", epochs=4, classifier="linear", refit=True, **TINY)
    m, best = run.metrics, run.metrics["best_epoch"]
    assert run.config.refit and run.status.status == "finished"
    assert m["refit"] == {"epochs": best, "stages": None, "trained_on": ["train", "validation"], "images": 24,
                          "model": "model.keras"}
    assert m["selection"]["model"] == "selection.keras" and m["selection"]["best_epoch"] == best
    assert m["selection"]["validation"] == m["validation"]  # the only meaningful validation figure
    refit_history = Run(run.file("refit")).read_history()
    assert [r["epoch"] for r in refit_history] == list(range(1, best + 1))
    assert "val_loss" not in refit_history[0]  # nothing validated
    selection, final = (keras.saving.load_model(run.file(f)) for f in ("selection.keras", "model.keras"))
    assert not np.allclose(_kernel(selection), _kernel(final))
    # predictions.csv: validation from the selection model, test from the final one (= model.keras)
    rows = api.predict(run.path, [tiny_data])
    by_path = {os.path.relpath(r["path"], tiny_data).replace(os.sep, "/"): r for r in rows}
    test = _predictions(run, "test")
    assert len(test) == m["test"]["n"] == 8
    for path, p_true in test.items():
        row = by_path[path]
        assert max(row["probabilities"].values()) >= 0 and p_true == pytest.approx(
            row["probabilities"][path.split("/")[0]], abs=2e-3), path
    assert "refit on train + validation: test accuracy" in api.describe(run)


@pytest.mark.slow  # kill/resume: the extended tier
def test_an_interrupted_refit_resumes_where_it_stopped(tiny_data, tmp_path, monkeypatch):
    from smallvision import fitting
    real = fitting.RunRecorder.on_epoch_end

    def stop_in_the_refit(self, epoch, logs=None):
        real(self, epoch, logs)
        if self.run.path.endswith("refit") and epoch == 0:  # committed the refit's 1st epoch, then Ctrl-C
            raise KeyboardInterrupt

    monkeypatch.setattr(fitting.RunRecorder, "on_epoch_end", stop_in_the_refit)
    with pytest.raises(SmallvisionError, match="interrupted; continue with"):
        api.train(tiny_data, "features", out=tmp_path / "runs", epochs=3, patience=None, refit=True,
                  run_dir=tmp_path / "runs" / "r", **TINY)
    run = Run(tmp_path / "runs" / "r")
    assert run.status.status == "interrupted" and not os.path.exists(run.model_path)
    assert os.path.isfile(run.file("selection.keras"))
    monkeypatch.undo()
    resumed = api.resume(run.path, verbose=0, progress=False)
    best = resumed.metrics["best_epoch"]
    assert [r["epoch"] for r in Run(run.file("refit")).read_history()] == list(range(1, best + 1))
    assert resumed.status.status == "finished" and resumed.metrics["refit"]["epochs"] == best
    # the same refit, uninterrupted, gives the same final model (to 1e-3: a resume reseeds the generators)
    again = api.train(tiny_data, "features", out=tmp_path / "runs", epochs=3, refit=True, **TINY)
    assert again.metrics["best_epoch"] == best
    a, b = (keras.saving.load_model(r.model_path) for r in (resumed, again))
    np.testing.assert_allclose(_kernel(a), _kernel(b), atol=1e-3)


@pytest.mark.slow
def test_a_refit_ladder_fine_tunes_the_selection_model_then_refits_from_the_final_one(tmp_path, monkeypatch):
    from smallvision import runs
    data = make_folder(tmp_path / "data", per_class=12)
    loaded = []
    real = runs.load_model
    monkeypatch.setattr(runs, "load_model", lambda path: loaded.append(os.fspath(path)) or real(path))
    out = tmp_path / "L"
    proc_args = dict(strategies=["features-augment", "finetune"], epochs_scale=0.04, image_size=64,
                     split="0.5,0.25,0.25", views=2, progress=False)
    api.ladder(str(data), out=str(out), classifier="linear", refit=True, **proc_args)
    fa, ft = (Run(out / "runs" / f"{s}-seed0") for s in ("features-augment", "finetune"))
    assert fa.config.refit and ft.config.refit and fa.config.options["classifier"] == "linear"
    assert os.path.isfile(fa.file("selection.keras")) and os.path.isfile(ft.file("selection.keras"))
    # finetune's selection starts from features-augment's selection model, its refit from the final one
    # (a run's own model.keras is read once more at its end, for novelty.npz: not a start)
    own = [p for p in loaded if os.path.dirname(p) == ft.path and os.path.basename(p) == "model.keras"]
    assert len(own) == 1 and os.path.isfile(ft.file("novelty.npz")), loaded
    starts = [p for p in loaded if os.path.basename(p) in ("selection.keras", "model.keras") and p not in own]
    assert starts and all(os.path.dirname(p) == fa.path for p in starts), loaded
    assert os.path.basename(starts[0]) == "selection.keras", loaded
    assert [os.path.basename(p) for p in starts].count("model.keras") == 1, loaded
    assert json.load(open(out / "ladder.json"))["refit"] is True
    table = api.summary_table(str(out))
    assert "gap, linear" in table and "refit (selection model:" in table
    with pytest.raises(SmallvisionError, match="ladder was made with refit=True, not False"):
        api.ladder(str(data), out=str(out), classifier="linear", **proc_args)


@pytest.mark.slow
def test_train_command_line_classifier_and_refit(tiny_data, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "smallvision", "train", str(tiny_data), "--strategy", "features",
                           "--classifier", "linear", "--refit", "--epochs", "2", "--image-size", "64", "--head", "gap",
                           "--split", "0.5,0.25,0.25", "--out", str(tmp_path / "runs"), "--quiet"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "refit: the final model on train + validation (24 images)" in proc.stderr
    assert "refit on train + validation: test accuracy" in proc.stdout
