"""`unknown` in predict: photos of other things against unseen cats and dogs (issue #26).

A default `features` run (Lite0, warm feature cache) on the shared photos keeps novelty.npz (its
training images' pooled features and a threshold at the 99th percentile of its validation
images' scores). Then `predict` on:

* the photos of other things that ship with scikit-learn, matplotlib and scikit-image (bench/
  audit.py's, the cat left out), each also cropped twice (3/4 of it, two corners): none of them
  was used to choose anything here (QUANTILE was set before looking at them);
* the 2,000 test photos (never seen in training or calibration).

It prints the share of each marked unknown, the AUROC of the score, and the run's wall time with
and without novelty (novelty.npz's cost), and writes bench/results/novelty.json.

    SMALLVISION_CACHE=<a warm cache> python bench/novelty.py
"""
import glob
import os
import sys
import tempfile
import time

import numpy as np

from _common import DATA, machine, need_data, record

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))


def main():
    need_data()
    from PIL import Image
    from sklearn.metrics import roc_auc_score

    from audit import other_photos
    from smallvision import api
    from smallvision.novelty import Novelty
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        run = api.train(str(DATA), "features", out=os.path.join(tmp, "runs"), progress=False, verbose=0)
        wall = time.perf_counter() - t
        novelty = Novelty.load(run.path)
        npz_bytes = os.path.getsize(os.path.join(run.path, "novelty.npz"))
        test_accuracy = run.metrics["test"]["accuracy"]
        others = []
        for k, p in enumerate(other_photos()):
            with Image.open(p) as im:
                im = im.convert("RGB")
                for j, c in enumerate([im, im.crop((0, 0, im.width * 3 // 4, im.height * 3 // 4)),
                                       im.crop((im.width // 4, im.height // 4, im.width, im.height))]):
                    path = os.path.join(tmp, f"other-{k}-{j}.jpg")
                    c.save(path, "JPEG", quality=90)
                    others.append(path)
        t = time.perf_counter()
        test = api.predict(run.path, sorted(glob.glob(str(DATA / "test" / "*" / "*.jpg"))), progress=False)
        predict_wall = time.perf_counter() - t
        other = api.predict(run.path, others, progress=False)
    ok_t = [r for r in test if r["error"] is None]
    ok_o = [r for r in other if r["error"] is None]
    scores = np.array([r["novelty"] for r in ok_t + ok_o])
    truth = np.array([0] * len(ok_t) + [1] * len(ok_o))
    record("novelty", {
        "machine": machine(), "run": {"strategy": "features", "wall_s": round(wall, 1),
                                      "test_accuracy": test_accuracy,
                                      "threshold": round(novelty.threshold, 4), "layer": novelty.layer,
                                      "reference": list(novelty.reference.shape),
                                      "novelty_npz_bytes": npz_bytes},
        "other_photos": len(ok_o), "unknown_other": round(float(np.mean([r["unknown"] for r in ok_o])), 4),
        "test_photos": len(ok_t), "unknown_test": round(float(np.mean([r["unknown"] for r in ok_t])), 4),
        "auroc": round(float(roc_auc_score(truth, scores)), 4),
        "max_probability_auroc": round(float(roc_auc_score(truth, [-r["probability"] for r in ok_t + ok_o])), 4),
        "missed": [(os.path.basename(r["path"]), r["class"], r["probability"], r["novelty"]) for r in ok_o
                   if not r["unknown"]],
        "test_unknown": [(os.path.relpath(r["path"], DATA), r["novelty"]) for r in ok_t if r["unknown"]][:30],
        "predict_2000_wall_s": round(predict_wall, 1)})


if __name__ == "__main__":
    main()
