"""Issue #28: mixed precision (``--mixed-precision``) against float32, on the machine at hand.

Two measures:

* ``speed``: the chapter's ``augment`` model (180x180, batch 32) trained on the same random
  images in each mode (``off`` = float32, ``bfloat16``, ``float16``), one warm-up epoch each,
  then the modes' epochs alternating ``--rounds`` times; medians of images/s and each mode's
  epoch time over float32's. This says whether ``auto`` should turn it on here.
* ``accuracy``: ``smallvision train --strategy features`` (EfficientNet-Lite0, the frozen base's
  features cached once, the chapter's head trained in the mode) on the shared dogs-vs-cats
  photos, ``--seeds`` seeds per mode: test accuracy per run, the mean, and its difference from
  float32. On a CPU this is the part of the ladder mixed precision touches at a cost a session
  can pay (the convnets' runs in bfloat16 take hours here); on a GPU, ``bench/gpu_ladder.py
  --mixed-precision`` runs the whole ladder.

    python bench/mixed.py [--images 128] [--rounds 3] [--seeds 3] [--parts speed,accuracy]

Written to bench/results/mixed.json.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _common import DATA, machine, median, need_data, record

MODES = ("off", "bfloat16", "float16")


def speed(n, rounds):
    import keras
    import numpy as np

    from smallvision import mixed
    from smallvision.models.augment import RandomChapterAugmentation
    from smallvision.models.convnet import chapter_convnet
    from smallvision.models.heads import compile_classifier

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 180, 180, 3), dtype=np.uint8)
    y = (np.arange(n) % 2).astype("float32")
    models = {}
    for mode in MODES:
        with mixed.scope(mode):
            keras.utils.set_random_seed(0)
            model = chapter_convnet((180, 180), 2, augmentation=RandomChapterAugmentation(seed=0), dropout=0.5)
            models[mode] = compile_classifier(model, 2, keras.optimizers.RMSprop(1e-3))
            models[mode].fit(x, y, batch_size=32, epochs=1, verbose=0)  # warm-up: traces and compiles
    seconds = {mode: [] for mode in MODES}
    for _ in range(rounds):
        for mode in MODES:
            with mixed.scope(mode):
                t = time.perf_counter()
                models[mode].fit(x, y, batch_size=32, epochs=1, verbose=0)
                seconds[mode].append(time.perf_counter() - t)
    rows = {}
    for mode in MODES:
        rows[mode] = {"epoch_seconds": [round(s, 2) for s in seconds[mode]], "images_per_second":
                      median([n / s for s in seconds[mode]]),
                      "epoch_time_over_float32": round(statistics.median(seconds[mode]) /
                                                       statistics.median(seconds["off"]), 2)}
        print(f"speed {mode}: {rows[mode]}", flush=True)
    return {"backend": keras.backend.backend(), "images": n, "rounds": rounds, "modes": rows}


def accuracy(seeds):
    from smallvision import api
    need_data()
    out = tempfile.mkdtemp(prefix="mixed-bench-")
    runs = {mode: [] for mode in MODES}
    for seed in range(seeds):
        for mode in MODES:
            t = time.perf_counter()
            run = api.train(str(DATA), "features", out=os.path.join(out, mode), seed=seed, mixed_precision=mode,
                            verbose=0, progress=False)
            runs[mode].append({"seed": seed, "test_accuracy": run.metrics["test"]["accuracy"],
                               "test_loss": run.metrics["test"]["loss"], "best_epoch": run.metrics["best_epoch"],
                               "recorded_mode": run.config.mixed_precision,
                               "wall_seconds": round(time.perf_counter() - t, 1)})
            print(f"accuracy {mode} seed {seed}: {runs[mode][-1]}", flush=True)
    mean = {mode: statistics.mean(r["test_accuracy"] for r in rows) for mode, rows in runs.items()}
    return {"strategy": "features", "backbone": "efficientnet_lite0", "data": "cats_vs_dogs_small (2,000 / 1,000 / "
            "2,000)", "seeds": seeds, "runs": runs,
            "mean_test_accuracy": {m: round(v, 4) for m, v in mean.items()},
            "difference_from_float32_points": {m: round(100 * (v - mean["off"]), 2) for m, v in mean.items()}}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--parts", default="speed,accuracy")
    a = p.parse_args()
    parts = a.parts.split(",")
    result = {"benchmark": "mixed precision against float32 (issue #28)", **machine()}
    import keras
    result["keras"] = keras.__version__
    if "speed" in parts:
        result["speed"] = speed(a.images, a.rounds)
    if "accuracy" in parts:
        result["accuracy"] = accuracy(a.seeds)
    record("mixed", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
