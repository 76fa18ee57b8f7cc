"""The cost of the data-parallel path on one host (issue #13): images/s of ``scratch`` on one
device (the plain path) and on two virtual CPU devices (``SMALLVISION_CPU_DEVICES=2 --devices
2``), under JAX (keras.distribution.DataParallel) and TensorFlow (MirroredStrategy), the same
global batch of 32, on a subset of dogs vs cats at 180x180 (``--per-class`` training images per
class, half as many validation images; the chapter's convnet trains at a few images/s under JAX
on this CPU, so the whole 2,000 would take an hour).

    python bench/devices.py [--per-class 200] [--epochs 3] [--repeats 2] [--backends jax,tensorflow]

Two virtual devices share this machine's cores, so they are not expected to be faster; the
figure is the overhead of the distributed path (goal: at most 15 %). Configurations alternate
(one, two, one, two, ...) so that the machine's drift falls on both; each run's figure is the
median of its epochs after the first (which compiles), training images per epoch second
(validation of the 1,000 images included in the epoch's time, as in history.csv).
"""
import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from _common import DATA, REPO, machine, need_data, record


def subset(root, per_class):
    """A copy of the first ``per_class`` training photos per class, half as many validation and
    16 test photos per class (copies: a scan reads regular files only)."""
    folder = os.path.join(root, "data")
    for split, n in (("train", per_class), ("validation", per_class // 2), ("test", 16)):
        for cls in sorted(os.listdir(DATA / split)):
            os.makedirs(os.path.join(folder, split, cls))
            for name in sorted(os.listdir(DATA / split / cls))[:n]:
                shutil.copy(DATA / split / cls / name, os.path.join(folder, split, cls, name))
    return folder


def one_run(backend, devices, epochs, root, data, n_train):
    out = tempfile.mkdtemp(dir=root)
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "smallvision", "train", data, "--strategy", "scratch", "--epochs", str(epochs),
           "--image-size", "180", "--out", out, "--quiet"]
    if devices > 1:
        env["SMALLVISION_CPU_DEVICES"] = str(devices)
        cmd += ["--devices", str(devices)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"{backend} devices={devices} failed:\n{p.stderr[-3000:]}")
    run = os.path.join(out, os.listdir(out)[0])
    with open(os.path.join(run, "history.csv")) as f:
        rows = list(csv.DictReader(f))
    shutil.rmtree(out)
    seconds = [float(r["seconds"]) for r in rows]
    ips = n_train / statistics.median(seconds[1:])
    print(f"{backend} devices={devices}: epoch seconds {seconds} -> {ips:.1f} images/s, "
          f"loss {[round(float(r['loss']), 5) for r in rows]}", flush=True)
    return {"epoch_seconds": seconds, "images_per_second": round(ips, 2),
            "loss": [round(float(r["loss"]), 6) for r in rows],
            "val_loss": [round(float(r["val_loss"]), 6) for r in rows]}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--backends", default="jax,tensorflow")
    p.add_argument("--per-class", type=int, default=200)
    a = p.parse_args()
    need_data()
    root = tempfile.mkdtemp(prefix="sv-bench-devices-")
    os.environ.setdefault("SMALLVISION_CACHE", os.path.join(root, "cache"))
    data = subset(root, a.per_class)
    n_train = 2 * a.per_class
    results = {}
    t0 = time.perf_counter()
    for backend in a.backends.split(","):
        runs = {1: [], 2: []}
        for _ in range(a.repeats):
            for devices in (1, 2):
                runs[devices].append(one_run(backend, devices, a.epochs, root, data, n_train))
        one = statistics.median(r["images_per_second"] for r in runs[1])
        two = statistics.median(r["images_per_second"] for r in runs[2])
        results[backend] = {"one_device": runs[1], "two_virtual_devices": runs[2],
                            "median_images_per_second": {"one": round(one, 2), "two": round(two, 2)},
                            "overhead_percent": round(100 * (one / two - 1), 1)}
        print(f"{backend}: one device {one:.1f} images/s, two virtual devices {two:.1f} -> overhead "
              f"{100 * (one / two - 1):.1f} %", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    record("devices", dict(
        benchmark="scratch on a subset of cats_vs_dogs_small (180x180, global batch 32): one device vs "
                  "two virtual CPU devices (SMALLVISION_CPU_DEVICES=2 --devices 2)",
        machine=machine(), epochs=a.epochs, train_images=n_train, validation_images=a.per_class, repeats=a.repeats, results=results,
        wall_seconds=round(time.perf_counter() - t0, 1),
        note="images/s = training images / median epoch seconds after the first (validation included); "
             "overhead = one/two - 1"))


if __name__ == "__main__":
    main()
