"""`features` on dogs vs cats: test accuracy and end-to-end wall time, cold (empty caches:
decode + feature extraction + head training + evaluation) and warm (same command again:
the decode and feature caches are reused, only the head trains); then the other heads, warm.

    python bench/features.py [--backbone efficientnet_lite0] [--heads flatten,gap] [--epochs 20]
    python bench/features.py --backbone vgg19 --book --per-class 100   # vs the chapter's recipe

--book also runs the chapter's own recipe on the same data and backbone
(``../shared/reference/book_recipe.py extract``: image_dataset_from_directory +
conv_base.predict) and times the same head fitted on in-memory feature arrays with plain
``model.fit``, so "book end to end" = its extraction + that head. --per-class N uses the first
N photos per class of every split (symlinks in a temporary folder; nothing is copied).

The issue's bare probe (PyTorch eager, pooled Lite0 features + logistic regression, 2,000
train and 2,000 test images): 98.05 % at 180 px in 66 s, 99.0 % at 224 px in 123 s, on a
day when this machine was faster (see RESULTS.md).
"""
import argparse
import os
import resource
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _common import BOOK, DATA, machine, need_data, record, run_json


def subset(per_class, root):
    for split in ("train", "validation", "test"):
        for c in sorted(os.listdir(DATA / split)):
            d = os.path.join(root, split, c)
            os.makedirs(d)
            for f in sorted(os.listdir(DATA / split / c))[:per_class]:
                os.symlink(DATA / split / c / f, os.path.join(d, f))
    return root


def plain_head_seconds(shape, n_train, n_val, epochs, head):
    """The chapter's head fitted with plain model.fit on in-memory arrays (what the book does)."""
    import keras
    import numpy as np
    from smallvision.strategies import pretrained
    inputs = keras.Input(shape)
    from smallvision.strategies.options import PretrainedOptions
    model = keras.Model(inputs, pretrained.head(inputs, PretrainedOptions(head=head, classifier="chapter"), 2))
    model.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x, y = rng.random((n_train,) + shape, dtype=np.float32), rng.integers(0, 2, n_train)
    xv, yv = rng.random((n_val,) + shape, dtype=np.float32), rng.integers(0, 2, n_val)
    t = time.perf_counter()
    model.fit(x, y, validation_data=(xv, yv), epochs=epochs, batch_size=32, verbose=0)
    return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--heads", default="flatten,gap")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--image-size", type=int)
    p.add_argument("--per-class", type=int, help="photos per class and split (default: all)")
    p.add_argument("--book", action="store_true", help="also time the chapter's recipe (vgg16/vgg19/xception)")
    a = p.parse_args()
    need_data()
    tmp = tempfile.mkdtemp(prefix="sv-bench-features-")
    os.environ["SMALLVISION_CACHE"] = os.path.join(tmp, "cache")
    data = subset(a.per_class, os.path.join(tmp, "data")) if a.per_class else str(DATA)
    from smallvision import api

    out = os.path.join(tmp, "runs")
    size = (a.image_size, a.image_size) if a.image_size else None
    heads = a.heads.split(",")
    runs = {}
    try:
        for phase, head in [("cold", heads[0]), ("warm", heads[0])] + [("warm", h) for h in heads[1:]]:
            t = time.perf_counter()
            run = api.train(data, "features", out=out, epochs=a.epochs, image_size=size, backbone=a.backbone,
                            head=head, verbose=2)
            wall = time.perf_counter() - t
            m, c = run.metrics, run.config
            runs[f"{phase}_{head}"] = dict(
                wall_seconds=round(wall, 1), test_accuracy=m["test"]["accuracy"], test_loss=m["test"]["loss"],
                validation_accuracy=m["validation"]["accuracy"], best_epoch=m["best_epoch"], epochs=m["epochs_done"],
                head_train_seconds=round(sum(r["seconds"] for r in run.read_history()), 1), params=m["params"])
            if phase == "cold":
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
            print(f"{phase} {head}: {runs[f'{phase}_{head}']}", file=sys.stderr)
        n_images = sum(sum(v) for v in c.counts.values())
        cold, warm = runs[f"cold_{heads[0]}"], runs[f"warm_{heads[0]}"]
        extract = cold["wall_seconds"] - warm["wall_seconds"]  # decode + extraction, the only cold-only work
        result = dict(
            benchmark="features strategy on cats_vs_dogs_small", machine=machine(),
            data=f"cats_vs_dogs_small, first {a.per_class} photos per class of each split" if a.per_class
            else "cats_vs_dogs_small (all 5,000)", images=n_images, backbone=a.backbone, image_size=list(c.image_size),
            seed=c.seed, backend=c.versions["backend"], runs=runs,
            decode_and_extract_seconds=round(extract, 1), extract_images_per_second=round(n_images / extract, 1),
            peak_rss_gib_cold=round(peak, 2), warm_speedup_vs_cold=round(cold["wall_seconds"] / warm["wall_seconds"], 2),
            goal="Lite0: test >= 99.0 %, faster than the bare probe; vs book >= 2x cold, >= 10x warm; RSS < 3 GiB")
        if a.book:
            import keras
            from smallvision.strategies import pretrained
            book = run_json([sys.executable, str(BOOK), "extract", str(data), "--base", a.backbone])
            from smallvision.strategies import get
            o = get("features").read_options({"backbone": a.backbone})
            shape = tuple(pretrained.frozen_base(tuple(c.image_size), o, weights=False)
                          .output_shape[1:])
            head_s = plain_head_seconds(shape, sum(c.counts["train"]), sum(c.counts["validation"]), a.epochs,
                                        heads[0])
            total = book["seconds"] + head_s
            result["book"] = dict(extract=book, head_seconds=round(head_s, 1), end_to_end_seconds=round(total, 1),
                                  ours_cold_speedup=round(total / cold["wall_seconds"], 2),
                                  ours_warm_speedup=round(total / warm["wall_seconds"], 2),
                                  note="book_recipe extract uses 180x180 and random weights (speed does not "
                                       "depend on them); run this benchmark at --image-size 180 to match")
            keras.backend.clear_session()
        record(f"features_{a.backbone}" + (f"_{a.per_class}pc" if a.per_class else ""), result)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
