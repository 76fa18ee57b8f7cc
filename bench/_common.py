"""Helpers shared by the benchmark scripts: where the data and the yardstick are, medians, results."""
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO.parent / "shared"
DATA = SHARED / "data" / "cats_vs_dogs_small"
BOOK = SHARED / "reference" / "book_recipe.py"
RESULTS = HERE / "results"


def need_data():
    if not DATA.is_dir():
        sys.exit(f"benchmark needs {DATA} (the shared dogs-vs-cats photos)")


def run_json(cmd, env=None):
    """Run a command that prints JSON lines; return the last JSON object it printed."""
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
                                                                      **(env or {})})
    if out.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{out.stderr[-3000:]}")
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    return json.loads(lines[-1])


def median(values):
    return round(statistics.median(values), 2)


def cpu_name():
    """The processor as `lscpu` names it, with its family and model (figures compare only on one)."""
    fields = {}
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or "unknown"
    return f"{fields.get('model name', 'unknown')} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"


def machine():
    return {"cpus": os.cpu_count(), "cpu": cpu_name(), "platform": platform.platform(),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M")}


def record(name, result):
    """Print the result and write it to bench/results/<name>.json."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result, indent=2, sort_keys=True))
    print(f"recorded in {path.relative_to(REPO)}")
