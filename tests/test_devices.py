"""More than one device (``--devices``, :mod:`smallvision.distribute`): bad values, the padding
that makes any batch split evenly, and — in subprocesses, since a backend fixes its devices when
it starts — training on two virtual CPU devices (``SMALLVISION_CPU_DEVICES=2``) under JAX
(``keras.distribution.DataParallel``) and TensorFlow (``MirroredStrategy``) against one device,
a killed two-device run resumed, and one training over two JAX processes on loopback."""
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from conftest import make_folder
from smallvision import distribute
from smallvision.data.dataset import ImageBatches
from smallvision.errors import SmallvisionError

HAVE_JAX = importlib.util.find_spec("jax") is not None
needs_jax = pytest.mark.skipif(not HAVE_JAX, reason="jax is not installed here (pip install jax)")
BACKENDS = [pytest.param("jax", marks=needs_jax), "tensorflow"]


# -- bad values ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "", 0, True, "2,3"])
def test_bad_devices_values_get_a_one_line_error(value):
    with pytest.raises(SmallvisionError) as e:
        distribute.parse(value)
    assert "devices must be a positive integer or 'all'" in str(e.value) and "\n" not in str(e.value)


def test_more_devices_than_the_backend_sees_is_refused_before_anything_is_written(tmp_path, capsys):
    from smallvision.cli import main
    data = make_folder(tmp_path / "data", per_class=4, size=32)
    out = tmp_path / "runs"
    assert main(["train", str(data), "--devices", "64", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "devices=64" in err and "sees 1 device here" in err
    assert "SMALLVISION_CPU_DEVICES=64" in err  # the way to try it on a CPU
    assert not out.exists()
    assert main(["train", str(data), "--devices", "two", "--out", str(out)]) == 2
    assert "Received: devices='two'" in capsys.readouterr().err
    assert not out.exists()


def test_one_device_is_the_plain_path():
    assert distribute.resolve(None) is distribute.ONE and distribute.resolve("1") is distribute.ONE
    assert distribute.resolve("all").count == 1  # this process sees one CPU device
    assert distribute.resolve(None, recorded={"count": 1}) is distribute.ONE


def test_backends_without_an_engine_and_multi_process_on_tensorflow_are_refused(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(SmallvisionError, match=r"runs on the JAX backend .*DataParallel.* and the TensorFlow backend "
                                               r".*MirroredStrategy.*KERAS_BACKEND=torch"):
        distribute.resolve(2)
    assert distribute.resolve(1) is distribute.ONE  # one device needs no engine
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "2")
    with pytest.raises(SmallvisionError, match="several processes runs on the JAX backend"):
        distribute.resolve("all")
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "x")
    with pytest.raises(SmallvisionError, match="must be a positive integer"):
        distribute.resolve("all")


# -- padding ------------------------------------------------------------------------------------

def batches(n, batch_size, devices, class_weight=None, labels=None):
    images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1).repeat(3, axis=3)
    labels = np.arange(n) % 2 if labels is None else labels
    return ImageBatches(images, labels, 2, batch_size, shuffle=True, seed=3, class_weight=class_weight,
                        devices=devices)


def test_every_batch_splits_evenly_and_the_padding_weighs_nothing():
    three = distribute.Devices(count=3, engine="test", names=("a", "b", "c"))
    ds = batches(10, 4, three, class_weight={0: 1.0, 1: 3.0})
    plain = batches(10, 4, None, class_weight={0: 1.0, 1: 3.0})
    for i in range(len(ds)):
        x, y, w = ds[i]
        x1, y1, w1 = plain[i]
        n, padded = len(x1), len(x)
        assert padded % 3 == 0 and padded - n < 3
        np.testing.assert_array_equal(x[:n], x1)  # the real images first, in the same order
        np.testing.assert_allclose(w[:n], w1 * padded / n, rtol=1e-6)  # the mean over the padded batch = theirs
        assert set(x[n:, 0, 0, 0]) <= set(x1[:, 0, 0, 0]) and not w[n:].any()  # copies of its own, weight 0
    # a dataset that needs no padding yields the plain batches
    two = distribute.Devices(count=2, engine="test", names=("a", "b"))
    for got, want in zip(batches(12, 4, two), batches(12, 4, None)):
        assert len(got) == 2 and all(np.array_equal(a, b) for a, b in zip(got, want))


def test_each_process_feeds_its_slice_of_every_global_batch():
    parts = [distribute.Devices(count=4, engine="test", names=tuple("abcd"), processes=2, process=k) for k in (0, 1)]
    whole = batches(11, 6, distribute.Devices(count=4, engine="test", names=tuple("abcd")))
    for i in range(len(whole)):
        joined = [np.concatenate(z) for z in zip(batches(11, 6, parts[0])[i], batches(11, 6, parts[1])[i])]
        for a, b in zip(joined, whole[i]):
            np.testing.assert_array_equal(a, b)


def test_a_padded_batch_trains_the_model_the_real_batch_would():
    """Keras' "sum over batch size" divides by the padded count: with the padding's weights the
    step is the real batch's (loss and new weights)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5, 4, 4, 3)).astype(np.uint8)
    y = np.array([0, 1, 1, 0, 1])

    def step(dev):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Rescaling(1 / 255), keras.layers.Flatten(),
                                  keras.layers.Dense(4, activation="relu"),
                                  keras.layers.Dense(1, activation="sigmoid")])
        model.compile("rmsprop", "binary_crossentropy")
        batch = ImageBatches(x, y, 2, 8, devices=dev)[0]
        loss = model.train_on_batch(*batch)
        return loss, model.get_weights()

    loss1, w1 = step(None)
    loss3, w3 = step(distribute.Devices(count=3, engine="test", names=tuple("abc")))  # 5 -> 6 rows
    assert loss3 == pytest.approx(loss1, rel=1e-6)
    for a, b in zip(w1, w3):
        np.testing.assert_allclose(a, b, atol=1e-6)


# -- on virtual devices, in subprocesses --------------------------------------------------------

def smallvision(*args, env=None, wait=True, **popen):
    cmd = [sys.executable, "-m", "smallvision", *map(str, args)]
    full = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    out = subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def only_run(out):
    names = os.listdir(out)
    assert len(names) == 1, names
    return os.path.join(out, names[0])


def history(run):
    import csv
    with open(os.path.join(run, "history.csv")) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def read(run, name):
    with open(os.path.join(run, name)) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """40 training images (a last batch of 8 at batch 32), 16 validation, 16 test."""
    return make_folder(tmp_path_factory.mktemp("devices") / "data", size=96,
                       splits={"train": 20, "validation": 8, "test": 8})


STRATEGIES = {"scratch": ["--image-size", "80"],
              "features-augment": ["--image-size", "64", "--views", "2"]}
# Two devices against one, the same global batch and seed, to 1e-4: only the order of the float
# sums differs. JAX's DataParallel computes the very step of one device, Dropout's masks included
# (JAX's random numbers do not depend on the sharding). Under MirroredStrategy each replica draws
# its own Dropout mask for its half of the batch, so the chapter's head (Dense, Dropout 0.5) trains
# on other masks than on one device — as noisy, not the same curve (measured: loss 0.58 vs 0.50
# after 2 epochs on these 40 images); TensorFlow's features-augment is compared with the linear
# head, which has no Dropout.
TOLERANCE = 1e-4
OPTIONS = {("tensorflow", "features-augment"): ["--classifier", "linear"]}


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_two_devices_train_the_model_one_device_trains(backend, strategy, small_data, tmp_path):
    env = {"KERAS_BACKEND": backend, "SMALLVISION_CPU_DEVICES": "2"}
    runs = {}
    for devices in (1, 2):
        out = tmp_path / f"d{devices}"
        smallvision("train", small_data, "--strategy", strategy, "--epochs", 2, "--out", out, "--quiet",
                    "--devices", devices, *STRATEGIES[strategy], *OPTIONS.get((backend, strategy), []), env=env)
        runs[devices] = only_run(out)
    one, two = (history(runs[d]) for d in (1, 2))
    tol = TOLERANCE
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        for key in ("loss", "val_loss"):
            assert b[key] == pytest.approx(a[key], rel=tol, abs=tol), (key, one, two)
    m1, m2 = read(runs[1], "metrics.json"), read(runs[2], "metrics.json")
    assert m2["test"]["loss"] == pytest.approx(m1["test"]["loss"], rel=tol, abs=tol)
    engine = {"jax": "keras.distribution.DataParallel", "tensorflow": "tf.distribute.MirroredStrategy"}[backend]
    assert read(runs[2], "config.json")["devices"] == {
        "count": 2, "engine": engine, "processes": 1,
        "names": ["cpu:0", "cpu:1"] if backend == "jax" else ["/device:CPU:0", "/device:CPU:1"]}
    assert read(runs[1], "config.json")["devices"]["count"] == 1
    assert read(runs[2], "config.json")["batch_size"] == 32  # the global batch
    for name in ("model.keras", "predictions.csv", "curves.png", "run.json"):  # the run folder as on one device
        assert os.path.isfile(os.path.join(runs[2], name)), name
    plain = keras.saving.load_model(os.path.join(runs[2], "model.keras"))  # a plain model, on any device count
    assert plain.count_params() > 0


@pytest.mark.slow
@needs_jax
def test_three_devices_pad_every_batch_and_train_the_same_model(small_data, tmp_path):
    """32 is not a multiple of 3: every batch is padded (32 -> 33, the last 8 -> 9) and the model
    is still the one-device model (validation is one batch here, so val_loss is exact too; the
    training loss in history.csv weighs each batch by its padded size, so it is not compared)."""
    env = {"KERAS_BACKEND": "jax", "SMALLVISION_CPU_DEVICES": "3"}
    runs = {}
    for devices in (1, 3):
        out = tmp_path / f"d{devices}"
        res = smallvision("train", small_data, "--strategy", "scratch", "--epochs", 2, "--out", out, "--quiet",
                          "--devices", devices, "--image-size", "80", env=env)
        runs[devices] = only_run(out)
    assert "every batch is padded to 33" in res.stderr
    for a, b in zip(history(runs[1]), history(runs[3])):
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
    assert read(runs[3], "metrics.json")["test"]["loss"] == pytest.approx(read(runs[1], "metrics.json")["test"]["loss"],
                                                                         rel=1e-4)


@pytest.mark.slow
@needs_jax
def test_a_run_killed_on_two_devices_resumes_and_continues_on_one(small_data, tmp_path):
    env = {"KERAS_BACKEND": "jax", "SMALLVISION_CPU_DEVICES": "2"}
    args = ["--strategy", "scratch", "--epochs", 4, "--image-size", "80", "--quiet", "--devices", 2]
    smallvision("train", small_data, "--out", tmp_path / "whole", *args, env=env)
    proc = smallvision("train", small_data, "--out", tmp_path / "killed", *args, env=env, wait=False)
    deadline = time.time() + 600
    state = None
    while time.time() < deadline and proc.poll() is None:
        runs = os.listdir(tmp_path / "killed") if (tmp_path / "killed").is_dir() else []
        path = tmp_path / "killed" / runs[0] / "checkpoint" / "state.json" if runs else None
        if path and path.is_file() and json.loads(path.read_text()).get("epochs_done", 0) >= 1:
            state = json.loads(path.read_text())
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state is not None, "no epoch was committed before the deadline"
    run = only_run(tmp_path / "killed")
    assert history(run)[-1]["epoch"] < 4
    out = smallvision("train", "--resume", run, "--quiet", env=env)  # on the devices it recorded
    assert "resuming" in out.stderr
    whole, resumed = history(only_run(tmp_path / "whole")), history(run)
    assert [r["epoch"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(whole, resumed):
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
    assert read(run, "config.json")["devices"]["count"] == 2
    assert read(run, "run.json")["status"] == "finished"
    # and trains further on one device (a checkpoint is a plain .keras file); config.json says so
    smallvision("train", "--resume", run, "--epochs", 5, "--devices", 1, "--quiet", env=env)
    assert [r["epoch"] for r in history(run)] == [1, 2, 3, 4, 5]
    assert read(run, "config.json")["devices"]["count"] == 1


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@needs_jax
def test_two_processes_on_loopback_train_the_model_one_process_trains(small_data, tmp_path):
    args = ["--strategy", "scratch", "--epochs", 2, "--image-size", "80", "--quiet"]
    smallvision("train", small_data, "--out", tmp_path / "one", *args, env={"KERAS_BACKEND": "jax"})
    private = tmp_path / "tmp"
    private.mkdir()
    env = {"KERAS_BACKEND": "jax", "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{free_port()}",
           "KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "TMPDIR": str(private)}
    procs = [smallvision("train", small_data, "--out", tmp_path / "two", *args, "--devices", "all", wait=False,
                         env={**env, "KERAS_DISTRIBUTION_PROCESS_ID": str(k)}) for k in (0, 1)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (stdout, stderr) in zip(procs, outs):
        assert p.returncode == 0, stderr[-3000:]
    assert "best epoch" in outs[0][0] and "best epoch" not in outs[1][0] + outs[1][1]  # only the first reports
    run = only_run(tmp_path / "two")  # only the first process wrote a run folder
    assert not os.listdir(private)  # the second one's private copy is gone
    one, two = history(only_run(tmp_path / "one")), history(run)
    for a, b in zip(one, two):
        for key in ("loss", "val_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-4), (key, one, two)
    devices = read(run, "config.json")["devices"]
    assert devices["count"] == 2 and devices["processes"] == 2
