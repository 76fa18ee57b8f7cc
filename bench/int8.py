"""int8 for the frozen base (issue #27): ONNX Runtime static quantization of the exported
EfficientNet-Lite0 extractor (224 px, pooled), calibrated on training photos, in several
variants; for each: images/s beside fp32 (same session, batch 32, medians of 3), how far its
features are from fp32's (cosine), and what a logistic regression on its features scores on the
test split against the same on fp32 features (all 5,000 photos, 3 seeds of the regression's
data order... the regression is deterministic, so 3 bootstrap-free figures: C = 1, 3, 10).

    python bench/int8.py [--calibration 200] [--variants qdq-pc,qdq-pc-rr,qdq-pc-nodw,...] [--name int8]

A variant is a name made of tokens: qdq (QDQ format, else QOperator), pc (per channel), rr (7-bit
weights, ONNX Runtime's reduce_range: what smallvision uses on an x86 CPU without VNNI), nodw
(depthwise convolutions left in float), convonly (only Conv/MatMul/Gemm), pct (percentile
calibration instead of min-max).

Needs the fp32 extractor in the cache (any `features` run made it). Written to
bench/results/<name>.json, with the CPU's name and whether smallvision would use 7-bit weights on it.
"""
import argparse
import glob
import os
import statistics
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _common import DATA, machine, need_data, record


def images_of(split, n=None, seed=0):
    from smallvision.data.decode import DecodeSpec
    from smallvision.data.imagefile import read_image
    paths = sorted(glob.glob(str(DATA / split / "*" / "*.jpg")))
    if n is not None:
        paths = list(np.random.default_rng(seed).choice(paths, n, replace=False))
    spec = DecodeSpec(224, 224)
    return np.stack([read_image(p, spec)[0] for p in paths]), np.array([p.split(os.sep)[-2] == "dogs" for p in paths])


def speed(runner, images, repeats=3):
    from smallvision.runtime import run_batches
    run_batches(runner, images[:64])
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run_batches(runner, images)
        times.append(time.perf_counter() - t)
    return len(images) / statistics.median(times)


def quantize(src, dst, calibration, variant):
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, name):
            self.batches = iter([{name: calibration[i:i + 16]} for i in range(0, len(calibration), 16)])

        def get_next(self):
            return next(self.batches, None)

    pre = dst + ".pre.onnx"
    quant_pre_process(src, pre, skip_symbolic_shape=True)
    model = onnx.load(pre)
    name = model.graph.input[0].name
    tokens = set(variant.split("-"))  # "pc" must not match inside "pct"
    exclude = []
    if "nodw" in tokens:  # leave depthwise convolutions in float
        for node in model.graph.node:
            group = [a.i for a in node.attribute if a.name == "group"]
            if node.op_type == "Conv" and group and group[0] > 1:
                exclude.append(node.name)
    method = CalibrationMethod.Percentile if "pct" in tokens else CalibrationMethod.MinMax
    extra = {"CalibPercentile": 99.999} if "pct" in tokens else {}
    quantize_static(pre, dst, Reader(name), quant_format=QuantFormat.QDQ if "qdq" in tokens else QuantFormat.QOperator,
                    per_channel="pc" in tokens, reduce_range="rr" in tokens, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, nodes_to_exclude=exclude, calibrate_method=method,
                    extra_options=extra, op_types_to_quantize=["Conv", "MatMul", "Gemm"] if "convonly" in tokens else None)
    os.unlink(pre)


def accuracy(train_x, train_y, test_x, test_y, c):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    s = StandardScaler().fit(train_x)
    m = LogisticRegression(C=c, max_iter=2000).fit(s.transform(train_x), train_y)
    return float((m.predict(s.transform(test_x)) == test_y).mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calibration", type=int, default=200)
    ap.add_argument("--variants", default="qdq-pc,qdq-pc-nodw,qdq-pc-convonly,qdq-pc-pct")
    ap.add_argument("--accuracy", action="store_true", help="also extract all 5,000 photos per variant")
    ap.add_argument("--name", default="int8", help="result file bench/results/<name>.json")
    args = ap.parse_args()
    need_data()
    from smallvision.data.cache import default_cache_root
    from smallvision.runtime import OnnxRunner, int8_saturates, run_batches
    src = sorted(glob.glob(os.path.join(default_cache_root(), "onnx", "efficientnet_lite0-imagenet-224x224-gap-*.onnx")))
    if not src:
        raise SystemExit("no fp32 Lite0 extractor in the cache: run a features run first")
    src = src[-1]
    calib, _ = images_of("train", args.calibration, seed=1)
    probe, _ = images_of("validation", 256, seed=2)
    fp32 = OnnxRunner(src)
    result = {"machine": machine(), "smallvision_uses_7_bit_weights": int8_saturates(),
              "calibration_images": args.calibration, "variants": {}}
    ref = run_batches(fp32, probe)
    result["fp32_images_per_s"] = round(speed(fp32, probe), 1)
    if args.accuracy:
        data = {s: images_of(s) for s in ("train", "validation", "test")}
        base = {s: run_batches(fp32, x) for s, (x, _) in data.items()}
        result["fp32_test_accuracy"] = {c: accuracy(np.concatenate([base["train"], base["validation"]]),
                                                    np.concatenate([data["train"][1], data["validation"][1]]),
                                                    base["test"], data["test"][1], c) for c in (1, 3, 10)}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants.split(","):
            dst = os.path.join(tmp, f"{variant}.onnx")
            t = time.perf_counter()
            quantize(src, dst, calib, variant)
            q = OnnxRunner(dst)
            got = run_batches(q, probe)
            cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
            row = {"quantize_s": round(time.perf_counter() - t, 1), "images_per_s": round(speed(q, probe), 1),
                   "cosine_min": round(float(cos.min()), 4), "cosine_median": round(float(np.median(cos)), 5)}
            row["speedup"] = round(row["images_per_s"] / result["fp32_images_per_s"], 2)
            result["fp32_images_per_s_again"] = round(speed(fp32, probe), 1)
            if args.accuracy:
                feats = {s: run_batches(q, x) for s, (x, _) in data.items()}
                row["test_accuracy"] = {c: accuracy(np.concatenate([feats["train"], feats["validation"]]),
                                                    np.concatenate([data["train"][1], data["validation"][1]]),
                                                    feats["test"], data["test"][1], c) for c in (1, 3, 10)}
            result["variants"][variant] = row
            print(variant, row, flush=True)
    record(args.name, result)


if __name__ == "__main__":
    main()
