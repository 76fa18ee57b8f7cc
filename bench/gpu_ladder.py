"""The whole ladder at the chapter's epochs on one GPU (issue #13, item 4), as one prepared run.

The GPU machine this project borrows has PyTorch and JAX but not TensorFlow, so the script
first measures which of the two Keras backends trains the slowest strategy (``augment``: the
chapter's RandomRotation/RandomZoom, 100 epochs) faster there — a short probe of each in its own
process — then runs every strategy with seed 0 at the chapter's epochs (scratch 30, augment
100, features 20, features-augment 50, finetune 50 + 30) under the faster one, and records wall
time per strategy, images/s and test accuracy.

    python bench/gpu_ladder.py --data DATA --out RESULTS_DIR [--epochs-scale 1] [--backends jax,torch]
                               [--mixed-precision auto|off|float16|bfloat16]

``--mixed-precision`` (default auto: bfloat16 on an Ampere/Hopper GPU) is every run's; the run
folders record what each trained in, and the JSON says it. Run it with ``off`` too to check the
accuracy against float32 (issue #28).

Frozen networks run through Keras on the GPU (``SMALLVISION_RUNTIME=keras``): the ONNX export
needs TensorFlow, which is not there, and ONNX Runtime there runs on the CPU.
"""
import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

ORDER = ("scratch", "features", "features-augment", "finetune", "augment")  # the slowest last: a timeout keeps the rest
CHAPTER = {"scratch": 0.695, "augment": 0.835, "features": 0.97, "features-augment": 0.975, "finetune": 0.985}


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def probe(backend, data, epochs, root, mixed_precision="auto"):
    """Seconds per epoch of ``augment`` under ``backend`` (the last of ``epochs``: the first compiles)."""
    out = os.path.join(root, f"probe-{backend}")
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, KERAS_BACKEND=backend)
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "smallvision", "train", data, "--strategy", "augment", "--epochs",
                        str(epochs), "--out", out, "--quiet", "--mixed-precision", mixed_precision], env=env,
                       capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode:
        print(f"probe {backend} failed:\n{p.stderr[-3000:]}", flush=True)
        return {"backend": backend, "error": p.stderr.strip().splitlines()[-1:] or ["?"], "wall_seconds": wall}
    run = os.path.join(out, os.listdir(out)[0])
    with open(os.path.join(run, "history.csv")) as f:
        rows = list(csv.DictReader(f))
    seconds = [float(r["seconds"]) for r in rows]
    result = {"backend": backend, "epoch_seconds": seconds, "wall_seconds": round(wall, 1)}
    print(f"probe {backend}: augment epoch seconds {seconds}, wall {wall:.1f} s", flush=True)
    return result


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="folder for gpu_ladder.json and the report")
    p.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "gpu-ladder"))
    p.add_argument("--epochs-scale", type=float, default=1.0)
    p.add_argument("--backends", default="jax,torch")
    p.add_argument("--probe-epochs", type=int, default=2)
    p.add_argument("--mixed-precision", default="auto", choices=("auto", "off", "float16", "bfloat16"))
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    os.environ.setdefault("SMALLVISION_RUNTIME", "keras")
    os.environ.setdefault("SMALLVISION_CACHE", os.path.join(a.work, "cache"))
    gpu = sh(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"])
    cpu = next((line.split(":", 1)[1].strip() for line in sh(["lscpu"]).splitlines()
                if line.startswith("Model name")), platform.processor())
    t0 = time.perf_counter()
    backends = a.backends.split(",")
    probes = [probe(b, a.data, a.probe_epochs, a.work, a.mixed_precision) for b in backends] if len(backends) > 1 else []
    timed = [r for r in probes if "epoch_seconds" in r]
    best = min(timed, key=lambda r: r["epoch_seconds"][-1])["backend"] if timed else backends[0]
    print(f"ladder under {best}", flush=True)
    os.environ["KERAS_BACKEND"] = best
    from smallvision import api
    from smallvision.report.collect import collect
    from smallvision.runs import Run
    ladder = os.path.join(a.work, "ladder")
    shutil.rmtree(ladder, ignore_errors=True)
    import keras
    t = time.perf_counter()
    done = []
    for strategy in ORDER:  # one strategy more per call (the folder keeps the finished runs), results after each
        done.append(strategy)
        ts = time.perf_counter()
        api.ladder(a.data, out=ladder, strategies=done, epochs_scale=a.epochs_scale, seeds=1, progress=True,
                   mixed_precision=a.mixed_precision)
        print(f"{strategy}: {time.perf_counter() - ts:.1f} s", flush=True)
        wall = time.perf_counter() - t
        table = api.summary_table(ladder)
        rows = []
        for r in collect(ladder)["rows"]:
            rows.append({k: r.get(k) for k in ("strategy", "backbone", "epochs", "best_epochs", "val_accuracy",
                                               "test_accuracy", "wall_seconds", "images_per_second", "image_size")}
                        | {"chapter_2nd_ed_test_accuracy": CHAPTER.get(r["strategy"])})
        result = dict(
            benchmark="smallvision ladder, seed 0, the chapter's epochs, on one GPU (issue #13)",
            gpu=gpu, cpu=cpu, cpus=os.cpu_count(), python=platform.python_version(), keras=keras.__version__,
            backend=best, backend_version=__import__(best).__version__, probes=probes, epochs_scale=a.epochs_scale,
            runtime=os.environ["SMALLVISION_RUNTIME"], mixed_precision_asked=a.mixed_precision,
            mixed_precision=sorted({Run.open(os.path.join(ladder, "runs", name)).config.mixed_precision
                                    for name in os.listdir(os.path.join(ladder, "runs"))}),
            ladder_wall_seconds=round(wall, 1), finished=list(done),
            script_wall_seconds=round(time.perf_counter() - t0, 1), rows=rows,
            data="cats_vs_dogs_small (train 2,000 / validation 1,000 / test 2,000), carried to the GPU machine "
                 "squashed to 224x224 and re-encoded as WebP quality 80 (the 64 MiB transfer limit)",
            date=time.strftime("%Y-%m-%d %H:%M"))
        with open(os.path.join(a.out, "gpu_ladder.json"), "w") as f:
            json.dump(result, f, indent=2, sort_keys=True)
        with open(os.path.join(a.out, "summary.txt"), "w") as f:
            f.write(table + "\n")
    print(table, flush=True)
    shutil.copy(os.path.join(ladder, "report.md"), os.path.join(a.out, "report.md"))
    print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
