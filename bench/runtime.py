"""The CPU inference runtime against Keras-TF, side by side on the same photos:

1. frozen-network images/s: Lite0 (224 px, global average pooling) on 2,000 decoded test photos,
   Keras ``predict_on_batch`` vs ONNX Runtime (median of --repeats passes after a warm-up), and
   the largest feature difference;
2. ``predict`` end to end on the 2,000 test photos (read, decode, classify) with a ``features``
   run's model.keras: Keras vs ONNX Runtime, the latter cold (export included) and warm, and
   with ``--tta`` (each photo and its mirror image): speed and test accuracy.

    python bench/runtime.py [--repeats 3]
"""
import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _common import DATA, machine, need_data, record


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--backbone", default="efficientnet_lite0")
    a = p.parse_args()
    need_data()
    tmp = tempfile.mkdtemp(prefix="sv-bench-runtime-")
    os.environ["SMALLVISION_CACHE"] = os.path.join(tmp, "cache")
    import numpy as np

    from smallvision import api, runtime
    from smallvision.data.decode import DecodeSpec
    from smallvision.data.imagefile import read_image
    from smallvision.strategies import features

    size = 224
    photos = sorted(str(f) for f in (DATA / "test").rglob("*.jpg"))
    images = np.stack([read_image(f, DecodeSpec(size, size))[0] for f in photos])
    from smallvision.strategies import get as get_strategy
    o = get_strategy("features").read_options({"backbone": a.backbone, "head": "gap"})
    model = features.extractor((size, size), o)
    t = time.perf_counter()
    ort = runtime.frozen_runner(model, "bench-extractor", count=None)
    export_s = time.perf_counter() - t
    keras_runner = runtime.KerasRunner(model)
    rates, outs = {}, {}
    for name, runner in (("keras", keras_runner), ("onnxruntime", ort)):
        runtime.run_batches(runner, images[:64])  # warm-up
        times = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            outs[name] = runtime.run_batches(runner, images)
            times.append(time.perf_counter() - t)
        rates[name] = round(len(images) / statistics.median(times), 1)
        print(f"{name}: {rates[name]} images/s", flush=True)
    diff = float(np.abs(outs["keras"] - outs["onnxruntime"]).max())

    run = api.train(str(DATA), "features", out=os.path.join(tmp, "runs"), epochs=3, verbose=0, progress=False)
    predict = {}
    for name, mode, tta in (("keras", "keras", False), ("onnxruntime_cold", "auto", False),
                            ("onnxruntime_warm", "auto", False), ("onnxruntime_tta", "auto", True)):
        os.environ["SMALLVISION_RUNTIME"] = mode
        t = time.perf_counter()
        rows = api.predict(run.path, [str(DATA / "test")], progress=False, tta=tta)
        s = time.perf_counter() - t
        right = sum(r["class"] == os.path.basename(os.path.dirname(r["path"])) for r in rows)
        predict[name] = dict(seconds=round(s, 1), images_per_second=round(len(rows) / s, 1),
                             test_accuracy=round(right / len(rows), 4))
        predict[name]["classes"] = [r["class"] for r in rows]
        print(f"predict {name}: {predict[name]['images_per_second']} images/s", flush=True)
    same = predict["keras"]["classes"] == predict["onnxruntime_warm"]["classes"]
    for v in predict.values():
        del v["classes"]
    record("runtime_" + a.backbone, dict(
        benchmark="frozen network and predict: ONNX Runtime vs Keras-TF", machine=machine(), images=len(images),
        image_size=size, backbone=a.backbone, extraction_images_per_second=rates,
        extraction_speedup=round(rates["onnxruntime"] / rates["keras"], 2), export_seconds=round(export_s, 1),
        max_abs_feature_diff=diff, predict=predict, predict_same_classes=same,
        predict_speedup_warm=round(predict["onnxruntime_warm"]["images_per_second"] /
                                   predict["keras"]["images_per_second"], 2),
        goal="extraction >= 2.5x Keras-TF; predict >= 4x the 21 images/s of before (84 images/s)"))


if __name__ == "__main__":
    main()
