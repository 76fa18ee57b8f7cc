"""From a run folder to the formats people deploy (issue #12): for each format, how long the
export (with its check on 1,000 validation photos) takes, and whether the exported file then
classifies the 2,000 shared test photos exactly like the run's model run by Keras — differing decisions,
max |Δprobability| — and at how many images/s through ``predict`` (decoding included).

    python bench/export.py [--run RUN] [--formats onnx,openvino,saved_model,litert] [--cache DIR]

Without --run it trains a features-augment run (EfficientNet-Lite0, the chapter's settings,
--patience 10) on the shared photos first. Written to bench/results/export.json.
"""
import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from _common import DATA, machine, need_data, record


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--run")
    p.add_argument("--formats", default="onnx,openvino,saved_model,litert")
    p.add_argument("--cache", help="cache folder (default: a temporary one)")
    a = p.parse_args()
    need_data()
    tmp = tempfile.mkdtemp(prefix="sv-bench-export-")
    os.environ["SMALLVISION_CACHE"] = a.cache or os.path.join(tmp, "cache")
    from smallvision import api
    run_path = a.run or api.train(str(DATA), "features-augment", out=os.path.join(tmp, "runs"), patience=10,
                                  verbose=0, progress=False).path
    from smallvision import runtime
    test = [str(DATA / "test")]
    runtime.choose("keras")  # the reference: the run's model.keras run by Keras itself
    t = time.perf_counter()
    reference = {r["path"]: r for r in api.predict(run_path, test, progress=False)}
    keras_rate = len(reference) / (time.perf_counter() - t)
    runtime.choose("auto")
    result = dict(benchmark="export formats: time, parity on the 2,000 test photos vs Keras, predict images/s",
                  machine=machine(), run=os.path.basename(run_path), test_images=len(reference),
                  keras_predict_images_per_s=round(keras_rate, 1), formats={})
    print("the run's model through predict with Keras:", result["keras_predict_images_per_s"], "images/s", flush=True)
    for fmt in a.formats.split(","):
        out = os.path.join(tmp, "export", fmt)
        t = time.perf_counter()
        exported = api.export(run_path, format=fmt, out=out, check_images=1000)
        seconds = time.perf_counter() - t
        t = time.perf_counter()
        rows = api.predict(out, test, progress=False)
        rate = len(rows) / (time.perf_counter() - t)
        diff = max(abs(r["probabilities"][c] - reference[r["path"]]["probabilities"][c])
                   for r in rows for c in r["probabilities"])
        differing = sum(r["class"] != reference[r["path"]]["class"] for r in rows)
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
        result["formats"][fmt] = dict(export_seconds=round(seconds, 1), check=exported.describe().replace(tmp + os.sep, ""),
                                      check_max_difference=exported.max_difference,
                                      test_max_difference=float(np.float64(diff)), test_differing=differing,
                                      predict_images_per_s=round(rate, 1), megabytes=round(size / 1e6, 1))
        print(fmt, result["formats"][fmt], flush=True)
    record("export", result)


if __name__ == "__main__":
    main()
