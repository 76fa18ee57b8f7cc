"""Benchmark 1: loading all 5,000 dogs-vs-cats JPEGs to 180x180 batches.

Cold: smallvision from an empty cache (scan + check + decode into the cache + one pass over
train, validation and test batches) vs one full pass of keras.utils.image_dataset_from_directory
(the chapter's loader, run by ../shared/reference/book_recipe.py load). Warm: smallvision
again with the cache filled, in a fresh process. Each measurement runs in its own process,
repeated; medians and ratios are recorded. Also records how far our reduced-scale JPEG
decode is from Keras' own pixels (full decode + tf.image.resize), mean absolute difference.

    python bench/pipeline.py [--repeats 3]
"""
import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time

from _common import BOOK, DATA, machine, median, need_data, record, run_json


def child(mode, cache):
    os.environ["SMALLVISION_CACHE"] = cache
    from smallvision.data import prepare
    from smallvision.data.dataset import ImageBatches
    from smallvision.data.decode import DecodeSpec

    t = time.perf_counter()
    prep = prepare(str(DATA), DecodeSpec(180, 180), progress=False)
    n = 0
    for name in ("train", "validation", "test"):
        ds = ImageBatches(prep.images[name], prep.labels[name], 2, batch_size=32, shuffle=name == "train")
        for i in range(len(ds)):
            x, y = ds[i]
            n += x.shape[0]
    dt = time.perf_counter() - t
    print(json.dumps(dict(measure=mode, images=n, seconds=round(dt, 3), images_per_s=round(n / dt, 1),
                          peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))))


def fidelity(count=300):
    """Mean |ours - Keras| over pixels, on the first ``count`` training images."""
    import numpy as np
    import tensorflow as tf

    from smallvision.data.decode import DecodeSpec
    from smallvision.data.imagefile import read_image
    spec = DecodeSpec(180, 180)
    files = sorted((DATA / "train" / "cats").iterdir())[:count // 2] + sorted((DATA / "train" / "dogs").iterdir())[:count // 2]
    diffs, reduced = [], 0
    for f in files:
        ours, info = read_image(f, spec)
        full = tf.io.decode_image(tf.io.read_file(str(f)), channels=3, expand_animations=False)
        keras_px = tf.image.resize(full, (180, 180)).numpy()  # what image_dataset_from_directory yields
        diffs.append(float(np.abs(ours.astype(np.float32) - keras_px).mean()))
        reduced += min(info.width, info.height) >= 360
    return dict(images=len(files), mean_abs_diff_0_255=round(float(np.mean(diffs)), 2),
                p95_abs_diff=round(float(np.percentile(diffs, 95)), 2), reduced_scale_decodes=reduced)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", nargs=2, metavar=("MODE", "CACHE"))
    a = p.parse_args()
    if a.child:
        return child(*a.child)
    need_data()
    me = [sys.executable, __file__, "--child"]
    cold, warm, book = [], [], []
    for r in range(a.repeats):
        cache = tempfile.mkdtemp(prefix="sv-bench-cache-")
        try:
            book.append(run_json([sys.executable, str(BOOK), "load", str(DATA)]))
            cold.append(run_json(me + ["cold", cache]))
            warm.append(run_json(me + ["warm", cache]))
        finally:
            shutil.rmtree(cache)
        print(f"repeat {r + 1}: book {book[-1]['images_per_s']}/s, cold {cold[-1]['images_per_s']}/s, "
              f"warm {warm[-1]['images_per_s']}/s", file=sys.stderr)
    med = {k: median([x["images_per_s"] for x in v]) for k, v in
           (("book_recipe_load", book), ("smallvision_cold", cold), ("smallvision_warm", warm))}
    result = dict(
        benchmark="load 5,000 JPEGs to 180x180 batches of 32 (train+validation+test)",
        machine=machine(), repeats=a.repeats, images_per_s_median=med,
        cold_vs_book=round(med["smallvision_cold"] / med["book_recipe_load"], 2),
        warm_vs_cold=round(med["smallvision_warm"] / med["smallvision_cold"], 1),
        peak_rss_mib={"smallvision_cold": max(x["peak_rss_mib"] for x in cold),
                      "smallvision_warm": max(x["peak_rss_mib"] for x in warm),
                      "book_recipe_load": max(x["peak_rss_mib"] for x in book)},
        runs={"book": book, "cold": cold, "warm": warm},
        pixels_vs_keras=fidelity(),
        goals="cold >= 1.5x book; warm >= 20x cold; peak memory < 2 GiB")
    record("pipeline", result)


if __name__ == "__main__":
    main()
