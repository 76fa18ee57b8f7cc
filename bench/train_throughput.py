"""Benchmark 2: training throughput of `scratch` through smallvision's Dataset vs plain model.fit
on in-memory arrays of the same model and images (goal: ratio >= 0.95), plus the chapter's own
recipe (book_recipe.py scratch) for reference.

The 2,000 training images at 180x180 come from the decode cache. Each path trains its own
copy of the model (same seed); after a warm-up epoch, epochs are timed alternately, and
the medians are compared. Epoch times here exclude validation.

    python bench/train_throughput.py [--epochs 3] [--no-book]
"""
import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _common import BOOK, DATA, machine, median, need_data, record, run_json


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per path (after one warm-up)")
    p.add_argument("--no-book", action="store_true")
    a = p.parse_args()
    need_data()
    import keras
    import numpy as np

    from smallvision.data import prepare
    from smallvision.data.dataset import ImageBatches
    from smallvision.data.decode import DecodeSpec
    from smallvision import strategies
    scratch = strategies.get("scratch")

    prep = prepare(str(DATA), DecodeSpec(180, 180), progress=False)
    images, labels = prep.images["train"], prep.labels["train"]
    n = len(labels)
    arrays = (images.take(np.arange(n)), labels.astype(np.float32)[:, None])
    paths = {}
    keras.utils.set_random_seed(0)
    paths["arrays"] = (scratch.build((180, 180), 2, 0, 1e-3),
                       lambda m: m.fit(arrays[0], arrays[1], batch_size=32, shuffle=True, epochs=1, verbose=0))
    ds = ImageBatches(images, labels, 2, batch_size=32, shuffle=True, seed=0)
    keras.utils.set_random_seed(0)
    paths["smallvision"] = (scratch.build((180, 180), 2, 0, 1e-3), lambda m: m.fit(ds, epochs=1, verbose=0))
    times = {k: [] for k in paths}
    for k, (model, step) in paths.items():
        step(model)  # warm-up: tracing, thread pools
    for e in range(a.epochs):
        for k, (model, step) in paths.items():
            t = time.perf_counter()
            step(model)
            times[k].append(time.perf_counter() - t)
            print(f"epoch {e + 1} {k}: {n / times[k][-1]:.1f} images/s", file=sys.stderr)
    ips = {k: median([n / t for t in v]) for k, v in times.items()}
    result = dict(benchmark="scratch convnet training throughput, 2,000 images at 180x180, batch 32 (no validation)",
                  machine=machine(), backend=keras.backend.backend(), keras=keras.__version__,
                  timed_epochs=a.epochs, images_per_s_median=ips,
                  epoch_seconds={k: [round(t, 2) for t in v] for k, v in times.items()},
                  smallvision_vs_arrays=round(ips["smallvision"] / ips["arrays"], 3), goal=">= 0.95")
    if not a.no_book:
        book = run_json([sys.executable, str(BOOK), "scratch", str(DATA), "--epochs", "2"])
        result["book_recipe_scratch"] = book
    record("train_throughput", result)


if __name__ == "__main__":
    main()
