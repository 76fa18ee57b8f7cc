"""Training end to end: run folder contents, plain-Keras loading, resume after kill -9."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from smallvision import api
from smallvision.errors import SmallvisionError
from smallvision.runs import Run
from conftest import make_folder

RUN_FILES = {"run.json", "config.json", "index.csv", "rejects.csv", "warnings.csv", "duplicates.csv",
             "history.csv", "model.keras", "metrics.json", "curves.png", "checkpoint"}


def plain_keras_load(model_path):
    """Open the model in a fresh interpreter that never imports smallvision (safe mode on)."""
    code = ("import sys, keras, numpy as np; m = keras.saving.load_model(sys.argv[1]); "
            "assert not any(k.startswith('smallvision') for k in sys.modules); "
            "print(m.count_params(), m.predict(np.zeros((1,) + m.input_shape[1:], 'uint8'), verbose=0).shape)")
    out = subprocess.run([sys.executable, "-c", code, model_path], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split("\n")[-2]


def check_run_folder(run, epochs):
    assert RUN_FILES <= set(os.listdir(run.path))
    assert run.status.status == "finished"
    history = run.read_history()
    assert [r["epoch"] for r in history] == list(range(1, epochs + 1))
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"} <= set(history[0])
    m = run.metrics
    assert set(m) >= {"validation", "test", "best_epoch"}
    for split in ("validation", "test"):
        assert 0 <= m[split]["accuracy"] <= 1 and np.array(m[split]["confusion_matrix"]).sum() == m[split]["n"]
        assert set(m[split]["per_class"]) == set(run.config.class_names)
    best = min(history, key=lambda r: r["val_loss"])
    assert m["best_epoch"] == best["epoch"]
    c = run.config
    assert len(c.data_index_sha256) == 64 and c.versions["keras"] and c.seed == 0
    with open(run.file("curves.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.realdata
@pytest.mark.parametrize("strategy", ["scratch", "augment"])
def test_short_run_on_real_photos_writes_every_file(shared_subset, tmp_path, strategy):
    run = api.train(shared_subset, strategy, out=tmp_path / "runs", epochs=2, image_size=(96, 96),
                    verbose=0, progress=False)
    check_run_folder(run, 2)
    assert run.config.split_origin == "folders"
    assert run.config.counts == {"train": [24, 24], "validation": [8, 8], "test": [8, 8]}
    assert run.metrics["test"]["n"] == 16
    from smallvision import strategies
    expected = strategies.get(strategy).build((96, 96), 2, 0, 1e-3, {}).count_params()
    assert plain_keras_load(run.model_path) == f"{expected} (1, 1)"
    with open(run.file("index.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 80 and {r["split"] for r in rows} == {"train", "validation", "test"}


def test_early_stopping_and_class_weights(tiny_data, tmp_path):
    run = api.train(tiny_data, "scratch", out=tmp_path / "runs", epochs=30, image_size=80, patience=1,
                    learning_rate=0.5, class_weight="balanced", split="0.5,0.25,0.25", verbose=0, progress=False)
    m = run.metrics
    assert m["stopped_early"] and m["epochs_done"] < 30
    assert m["epochs_done"] - m["best_epoch"] == 1  # patience 1
    assert run.config.class_weights == {0: 1.0, 1: 1.0}


def test_bad_options_fail_before_a_run_folder_exists(tiny_data, tmp_path):
    with pytest.raises(SmallvisionError, match="at least 78x78"):
        api.train(tiny_data, "scratch", out=tmp_path / "runs", image_size=40, progress=False)
    with pytest.raises(SmallvisionError, match="epochs must be a positive integer"):
        api.train(tiny_data, "scratch", out=tmp_path / "runs", epochs=0, progress=False)
    assert not (tmp_path / "runs").exists()


def wait_for(predicate, timeout, proc):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        if proc.poll() is not None:
            raise AssertionError(f"training exited early: {proc.stdout.read()[-3000:]}")
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_resume_after_kill_9(tmp_path):
    data = make_folder(tmp_path / "d", per_class=40, size=96)
    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "smallvision", "train", str(data), "--strategy", "augment",
                             "--epochs", "6", "--image-size", "80", "--out", str(out), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())

    def committed():
        runs = list(out.glob("*/checkpoint/state.json")) if out.exists() else []
        return runs and json.loads(runs[0].read_text())["epochs_done"] >= 2

    try:
        assert wait_for(committed, 300, proc), "no epoch committed in time"
        time.sleep(0.3)  # somewhere inside the next epoch
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    [run_dir] = list(out.iterdir())
    run = Run.open(run_dir)
    assert run.status.status == "running"  # killed: nobody could write anything else
    done = run.state.epochs_done
    assert 2 <= done < 6 and len(run.read_history()) == done
    resumed = api.resume(run_dir, verbose=0, progress=False)
    check_run_folder(resumed, 6)
    assert resumed.status.resumed
    plain_keras_load(resumed.model_path)


def test_resume_refuses_changed_data(tiny_data, tmp_path):
    run = api.train(tiny_data, "scratch", out=tmp_path / "runs", epochs=1, image_size=80, verbose=0, progress=False)
    (tiny_data / "bars" / sorted(os.listdir(tiny_data / "bars"))[0]).unlink()
    with pytest.raises(SmallvisionError, match="the data changed"):
        api.resume(run.path, epochs=2, progress=False)


def test_finished_run_can_train_further(tiny_data, tmp_path):
    run = api.train(tiny_data, "scratch", out=tmp_path / "runs", epochs=1, image_size=80, verbose=0, progress=False)
    more = api.resume(run.path, epochs=3, verbose=0, progress=False)
    assert [r["epoch"] for r in more.read_history()] == [1, 2, 3]
    assert more.config.epochs == 3


def test_resume_finds_moved_data(tiny_data, tmp_path):
    run = api.train(tiny_data, "scratch", out=tmp_path / "runs", epochs=1, image_size=80, verbose=0, progress=False)
    moved = tmp_path / "moved"
    tiny_data.rename(moved)
    with pytest.raises(SmallvisionError, match="no such folder"):
        api.resume(run.path, epochs=2, progress=False)
    again = api.resume(run.path, epochs=2, verbose=0, progress=False, data=moved)
    assert len(again.read_history()) == 2 and again.config.data == str(moved)


@pytest.mark.slow  # default tier under 5 minutes: CI's extended tier runs it
def test_features_strategy_end_to_end(tiny_data, tmp_path, isolated_cache):
    run = api.train(tiny_data, "features", out=tmp_path / "runs", epochs=2, image_size=64, head="gap",
                    split="0.5,0.25,0.25", verbose=0, progress=False)
    check_run_folder(run, 2)
    assert run.config.options == {"backbone": "efficientnet_lite0", "head": "gap", "classifier": "chapter",
                                  "weights": "imagenet", "precision": "fp32"} and run.config.image_size == (64, 64)
    # model.keras is base + head: it takes images, opens in plain Keras, and predicts like the run
    assert plain_keras_load(run.model_path).endswith("(1, 1)")
    rows = api.predict(run.path, [tiny_data / "bars"])
    assert len(rows) == 16 and all(r["error"] is None for r in rows)
    # a gap head caches the pooled vectors (1280 per image, not the 2x2x1280 map)
    shards = lambda: sorted(p.relative_to(isolated_cache).as_posix() for p in isolated_cache.glob("features/*/*.u8"))
    before = shards()
    assert len(before) == 1 and before[0].split("/")[1].endswith("-gap")
    assert os.path.getsize(isolated_cache / before[0]) == 32 * 1280 * 2
    # a second run (other seed) reuses the cached features: no new shard is written
    again = api.train(tiny_data, "features", out=tmp_path / "runs", epochs=1, image_size=64, head="gap",
                      split="0.5,0.25,0.25", seed=1, verbose=0, progress=False)
    assert again.status.status == "finished" and shards() == before
    # the Flatten head needs the maps: its own store
    flat = api.train(tiny_data, "features", out=tmp_path / "runs", epochs=1, image_size=64, head="flatten",
                     split="0.5,0.25,0.25", seed=1, verbose=0, progress=False)
    assert flat.status.status == "finished" and len(shards()) == 2
    import keras
    assert keras.saving.load_model(flat.model_path).count_params() > 4_000_000  # Lite0 inside


def test_backbone_options_are_for_pretrained_strategies(tiny_data, tmp_path):
    with pytest.raises(SmallvisionError, match="takes no --backbone"):
        api.train(tiny_data, "scratch", out=tmp_path / "runs", backbone="vgg16", progress=False)
    with pytest.raises(SmallvisionError, match="head must be one of"):
        api.train(tiny_data, "features", out=tmp_path / "runs", head="attention", image_size=64, progress=False)


def test_run_folders_written_before_the_dataclasses_still_resume_and_report(tiny_data, tmp_path):
    """config.json / state.json as earlier versions wrote them (no stage bookkeeping, class
    weights keyed by strings, no decode key) are read, resumed and reported."""
    import json

    from smallvision.report import summary_table
    run = api.train(tiny_data, "scratch", out=tmp_path / "runs", epochs=1, image_size=80, class_weight="balanced",
                    split="0.5,0.25,0.25", verbose=0, progress=False)
    config = json.loads(open(run.file("config.json")).read())
    for key in ("decode", "optimizer"):
        config.pop(key)
    config["class_weights"] = {"0": 1.0, "1": 1.0}
    config["unknown_future_key"] = 1
    open(run.file("config.json"), "w").write(json.dumps(config))
    state = json.loads(open(run.file("checkpoint", "state.json")).read())
    for key in ("stage", "stage_start", "stages", "stopped_early"):
        state.pop(key)
    open(run.file("checkpoint", "state.json"), "w").write(json.dumps(state))
    assert run.config.class_weights == {0: 1.0, 1: 1.0} and run.state.stage == -1
    more = api.resume(run.path, epochs=2, verbose=0, progress=False)
    assert [r["epoch"] for r in more.read_history()] == [1, 2] and more.state.stages == {"train": 1}
    assert "scratch" in summary_table(more.path)
