"""How fast a run folder answers in a fresh process (issue #27): `predict RUN one_photo.jpg`
(median of 5), `predict RUN` on 500 and on all 2,000 unseen test photos (fresh processes,
after one warm-up call so that whatever a first use writes is written), `serve RUN` from the
start to its first answer (median of 3), and the yardstick: plain Keras `model.predict` on the
same 500 photos, already decoded, in a warm interpreter (median of 3).

    python bench/predict.py --run RUN [--src SRC] [--name NAME] [--repeats 5]

--src runs another checkout's code (its src/ folder) for a before/after side by side.
Written to bench/results/predict[_NAME].json.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _common import DATA, machine, need_data, record


def photos(n):
    tests = sorted((DATA / "test").rglob("*.jpg"))
    cats = [p for p in tests if p.parent.name.startswith("cat")]
    dogs = [p for p in tests if p.parent.name.startswith("dog")]
    return [str(p) for pair in zip(cats, dogs) for p in pair][:n]


def env(src):
    e = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if src:
        e["PYTHONPATH"] = src
    return e


def timed(cmd, e):
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=e)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[:6]} failed:\n{out.stderr[-2000:]}")
    return time.perf_counter() - t, out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_answer(run, photo, e, limit_s=120):
    import httpx
    port = free_port()
    body = open(photo, "rb").read()
    t = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "smallvision", "serve", run, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=e)
    try:
        while time.perf_counter() - t < limit_s:
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/predict", content=body,
                               headers={"content-type": "image/jpeg"}, timeout=30)
                if r.status_code == 200:
                    return time.perf_counter() - t
            except httpx.HTTPError:
                time.sleep(0.02)
        raise RuntimeError("serve gave no answer in time")
    finally:
        server.terminate()
        server.wait(10)


def keras_yardstick(run, paths, repeats):
    """Plain Keras on already decoded photos, in this (warm) interpreter."""
    import keras
    import numpy as np

    from smallvision.data.decode import DecodeSpec
    from smallvision.data.imagefile import read_image
    with open(os.path.join(run, "config.json")) as f:
        crop = bool(json.load(f).get("crop_to_aspect", False))
    model = keras.saving.load_model(os.path.join(run, "model.keras"))
    spec = DecodeSpec(*model.input_shape[1:3], crop)
    images = np.stack([read_image(p, spec)[0] for p in paths])
    model.predict(images[:32], verbose=0)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        model.predict(images, batch_size=32, verbose=0)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--src", help="another checkout's src/ folder (the code before)")
    ap.add_argument("--name", default="")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-keras", action="store_true", help="skip the plain-Keras yardstick")
    args = ap.parse_args()
    need_data()
    e = env(args.src)
    predict = [sys.executable, "-m", "smallvision", "predict", args.run]
    one, p500, p2000 = photos(1), photos(500), photos(2000)
    result = {"machine": machine(), "run": os.path.basename(os.path.normpath(args.run)), "src": "another checkout (--src)" if args.src else "this checkout"}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "p.csv")
        timed(predict + p500 + ["--output", out], e)  # warm-up: a first use writes what it writes
        result["one_photo_s"] = [round(timed(predict + one, e)[0], 3) for _ in range(args.repeats)]
        result["photos500_s"] = [round(timed(predict + p500 + ["--output", out], e)[0], 3)
                                 for _ in range(max(3, args.repeats // 2))]
        result["photos2000_s"] = [round(timed(predict + p2000 + ["--output", out], e)[0], 3) for _ in range(2)]
    result["serve_first_answer_s"] = [round(first_answer(args.run, one[0], e), 3) for _ in range(3)]
    for k in ("one_photo_s", "photos500_s", "photos2000_s", "serve_first_answer_s"):
        result[k + "_median"] = round(statistics.median(result[k]), 3)
    result["photos2000_images_per_s"] = round(2000 / result["photos2000_s_median"], 1)
    if not args.no_keras:
        k = keras_yardstick(args.run, p500, 3)
        result["keras_predict_500_warm_s"] = round(k, 3)
        result["photos500_vs_keras"] = round(k / result["photos500_s_median"], 2)
    record("predict" + (f"_{args.name}" if args.name else ""), result)


if __name__ == "__main__":
    main()
