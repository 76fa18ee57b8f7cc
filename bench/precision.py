"""fp32 against int8 (issue #27), as a user runs them: `smallvision train DATA --strategy S
--precision P --seed K` in a fresh process on all 5,000 photos, for each strategy, precision and
seed: wall seconds and test accuracy (metrics.json). With --cold, also one `features` run per
precision on an empty cache (decoding, export, quantization and extraction included).

    python bench/precision.py [--strategies features,features-augment] [--seeds 0,1,2] [--cold]

Warm runs use $SMALLVISION_CACHE (the first run of a precision fills what is missing: its time
is reported apart). Written to bench/results/precision.json.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from _common import DATA, machine, need_data, record


def train(strategy, precision, seed, out, env, extra=()):
    cmd = [sys.executable, "-m", "smallvision", "train", str(DATA), "--strategy", strategy, "--precision", precision,
           "--seed", str(seed), "--out", out, "--quiet", *extra]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{proc.stderr[-3000:]}")
    run = sorted(os.path.join(out, d) for d in os.listdir(out))[-1]
    metrics = json.load(open(os.path.join(run, "metrics.json")))
    labels = json.load(open(os.path.join(run, "labels.json"))) if os.path.exists(os.path.join(run, "labels.json")) \
        else {}
    return {"seed": seed, "wall_s": round(wall, 1), "test_accuracy": metrics["test"]["accuracy"],
            "model_onnx": bool(labels), "int8_vs_fp32": labels.get("check", {}).get("int8_vs_fp32")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--strategies", default="features")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--name", default="precision")
    args = ap.parse_args()
    need_data()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    seeds = [int(s) for s in args.seeds.split(",")]
    result = {"machine": machine(), "strategies": {}}
    with tempfile.TemporaryDirectory() as tmp:
        if args.cold:
            result["cold_features"] = {}
            for precision in ("fp32", "int8"):
                cold = dict(env, SMALLVISION_CACHE=os.path.join(tmp, f"cache-{precision}"))
                r = train("features", precision, 0, os.path.join(tmp, f"cold-{precision}"), cold)
                result["cold_features"][precision] = r
                print("cold features", precision, r, flush=True)
        for strategy in args.strategies.split(","):
            per = result["strategies"][strategy] = {}
            for precision in ("fp32", "int8"):
                rows = []
                for seed in seeds:
                    rows.append(train(strategy, precision, seed, os.path.join(tmp, f"{strategy}-{precision}-{seed}"),
                                      env))
                    print(strategy, precision, rows[-1], flush=True)
                acc = [r["test_accuracy"] for r in rows]
                per[precision] = {"runs": rows, "test_accuracy_mean": round(statistics.mean(acc), 5),
                                  "wall_s_median": round(statistics.median(r["wall_s"] for r in rows), 1)}
            per["int8_minus_fp32_points"] = round(100 * (per["int8"]["test_accuracy_mean"]
                                                          - per["fp32"]["test_accuracy_mean"]), 3)
            print(strategy, {k: v for k, v in per.items() if k != "runs"}, flush=True)
    record(args.name, result)


if __name__ == "__main__":
    main()
