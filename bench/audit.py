"""`smallvision audit` on dogs vs cats: what it finds as shipped, and how well it finds planted faults.

* as shipped: the findings on the 5,000 photos, and the wall time (warm feature cache, twice);
* labels: 3 % and 10 % of the train + validation labels flipped at random (3 draws each), on
  the same features in memory: precision and recall of the ``label`` findings (a natural label
  error of the data that is found counts against precision);
* leaks: 100 test photos copied into train, each resized 0.5-0.9x, cropped <= 10 %, brightness
  +-10 %, re-encoded JPEG q 60-90 (a temporary folder of symlinks plus the copies; draws 1 and 2:
  draw 0 set COPY_SCORE): recall as
  ``leak`` pairs, and the pairs found among the untouched photos;
* outliers: photos of other things that ship with scikit-learn, matplotlib and scikit-image
  (when installed; the cat among them left out) put into the class folders, three of them
  three times (crops): AUROC of the outlier score against the 5,000, the share of them in
  audit.csv as outliers, and the share of the others flagged. The threshold (OUTLIER_MADS) was
  set on the photos of even index; the odd ones are reported apart (held out).

    python bench/audit.py [--seeds 3] [--copies 100]
"""
import argparse
import glob
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from _common import DATA, machine, need_data, record

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))


def mirror(root):
    """A folder of symlinks to the shared photos (nothing copied)."""
    for split in ("train", "validation", "test"):
        for c in sorted(os.listdir(DATA / split)):
            os.makedirs(os.path.join(root, split, c))
            for f in sorted(os.listdir(DATA / split / c)):
                os.symlink(DATA / split / c / f, os.path.join(root, split, c, f))
    return root


def label_noise(seeds):
    from cleanlab.filter import find_label_issues

    from smallvision import audit as A
    f = A.load_features(str(DATA), progress=False)
    out = {}
    for rate in (0.03, 0.10):
        rows = []
        for seed in range(seeds):
            rng = np.random.default_rng(100 + seed)
            candidates = np.flatnonzero(f.splits != "test")
            flip = rng.choice(candidates, int(rate * len(candidates)), replace=False)
            y = f.labels.copy()
            y[flip] = 1 - y[flip]
            t = time.perf_counter()
            probs = A.out_of_fold(f.x, y, 2, A.FOLDS, seed)
            found = set(np.flatnonzero(find_label_issues(y, probs, filter_by="prune_by_noise_rate")))
            tp = len(found & set(flip))
            rows.append(dict(seed=seed, flipped=len(flip), found=len(found), precision=round(tp / max(len(found), 1), 3),
                             recall=round(tp / len(flip), 3), seconds=round(time.perf_counter() - t, 1)))
            print(f"labels {rate:.0%} seed {seed}: {rows[-1]}", flush=True)
        out[f"{rate:.0%}"] = dict(draws=rows, precision_mean=round(float(np.mean([r["precision"] for r in rows])), 3),
                                  recall_mean=round(float(np.mean([r["recall"] for r in rows])), 3))
    return out


def near_copy(src, dst, rng):
    from PIL import Image, ImageEnhance
    with Image.open(src) as im:
        im = im.convert("RGB")
        w, h = im.size
        cx, cy = rng.uniform(0, 0.10) * w, rng.uniform(0, 0.10) * h  # crop <= 10 % of each side in all
        left, top = rng.uniform(0, cx), rng.uniform(0, cy)
        im = im.crop((int(left), int(top), int(w - (cx - left)), int(h - (cy - top))))
        s = rng.uniform(0.5, 0.9)
        im = im.resize((max(8, int(im.width * s)), max(8, int(im.height * s))), Image.BILINEAR)
        im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.9, 1.1))
        im.save(dst, "JPEG", quality=int(rng.integers(60, 91)))


def leaks(count, seed=1):
    from smallvision.audit import audit
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = mirror(os.path.join(tmp, "data"))
        tests = sorted(glob.glob(os.path.join(root, "test", "*", "*.jpg")))
        planted = {}
        for k in rng.choice(len(tests), count, replace=False):
            src = tests[k]
            cls = os.path.basename(os.path.dirname(src))
            name = f"copy-{os.path.basename(src)}"
            near_copy(os.path.realpath(src), os.path.join(root, "train", cls, name), rng)
            planted[os.path.relpath(src, root).replace(os.sep, "/")] = f"train/{cls}/{name}"
        result = audit(root, out=os.path.join(tmp, "audit"), progress=False)
    pairs = {(f.path, f.other) for f in result.findings if f.issue in ("leak", "near_duplicate")}
    found = sum((path, copy) in pairs for path, copy in planted.items())
    others = sorted(p for p in pairs if p not in set(planted.items()))
    return dict(planted=count, found_as_leaks=found, recall=round(found / count, 3), other_pairs=others,
                seconds=result.seconds)


def other_photos():
    """(name, path) of photos of other things that ship with installed packages (no cats)."""
    import matplotlib
    import sklearn.datasets
    found = [os.path.join(os.path.dirname(sklearn.datasets.__file__), "images", f) for f in ("china.jpg", "flower.jpg")]
    found += glob.glob(os.path.join(matplotlib.get_data_path(), "sample_data", "*.jpg"))
    found += glob.glob(os.path.join(matplotlib.get_data_path(), "sample_data", "*.png"))
    try:
        import skimage
        found += [p for p in glob.glob(os.path.join(os.path.dirname(skimage.__file__), "data", "*"))
                  if p.endswith((".png", ".jpg")) and "chelsea" not in p]
    except ImportError:
        pass
    return sorted(found)


def outlier_check():
    from PIL import Image
    from sklearn.metrics import roc_auc_score

    from smallvision import audit as A
    photos = other_photos()
    with tempfile.TemporaryDirectory() as tmp:
        root = mirror(os.path.join(tmp, "data"))
        slots = [(s, c) for s in ("train", "validation", "test") for c in ("cats", "dogs")]
        planted = []
        for k, p in enumerate(photos):
            with Image.open(p) as im:
                im = im.convert("RGB")
                copies = [im] if k >= 3 else [im, im.crop((0, 0, im.width * 3 // 4, im.height * 3 // 4)),
                                              im.crop((im.width // 4, im.height // 4, im.width, im.height))]
                for j, c in enumerate(copies):
                    split, cls = slots[(k + j) % len(slots)]
                    rel = f"{split}/{cls}/other-{k}-{j}.jpg"
                    c.save(os.path.join(root, rel), "JPEG", quality=90)
                    planted.append(rel)
        result = A.audit(root, out=os.path.join(tmp, "audit"), progress=False)
        f = A.load_features(root, progress=False)
    scores = A.outlier_scores(f.x, f.splits)
    is_other = np.array([e.path in set(planted) for e in f.entries])
    flagged = {x.path for x in result.findings if x.issue == "outlier"}
    # OUTLIER_MADS was set on the photos of even index; the odd ones were not looked at for it
    held = [p for p in planted if int(p.split("other-")[1].split("-")[0]) % 2]
    return dict(photos=len(photos), planted=len(planted), auroc=round(float(roc_auc_score(is_other, scores)), 4),
                planted_flagged=round(sum(p in flagged for p in planted) / len(planted), 3),
                held_out_flagged=f"{sum(p in flagged for p in held)} of {len(held)}",
                others_flagged=round(len(flagged - set(planted)) / (len(f.entries) - len(planted)), 4),
                missed=[p for p in planted if p not in flagged], false=sorted(flagged - set(planted))[:20])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--copies", type=int, default=100)
    a = p.parse_args()
    need_data()
    from smallvision.audit import audit
    result = dict(benchmark="smallvision audit on cats_vs_dogs_small (issue #26)", machine=machine(),
                  goals="labels 3 %: P,R >= 0.95; 10 %: >= 0.92; leaks: recall >= 0.98, <= 5 false pairs; "
                        "outliers: AUROC >= 0.99, >= 95 % flagged, <= 2 % of the others; warm audit <= 20 s")
    with tempfile.TemporaryDirectory() as tmp:
        times = []
        for _ in range(2):
            t = time.perf_counter()
            shipped = audit(str(DATA), out=os.path.join(tmp, "a"), progress=False)
            times.append(round(time.perf_counter() - t, 1))
        result["as_shipped"] = dict(wall_seconds=times, counts=shipped.counts(), notes=list(shipped.notes),
                                    findings=[dict(path=f.path, issue=f.issue, score=f.score, given=f.given,
                                                   suggested=f.suggested, other=f.other, detail=f.detail)
                                              for f in shipped.findings])
        shutil.copy(shipped.html, os.path.join(os.path.dirname(__file__), "results", "audit_shipped.html")) \
            if os.environ.get("KEEP_AUDIT_HTML") else None
    print("as shipped:", result["as_shipped"]["counts"], "wall", times, flush=True)
    result["labels"] = label_noise(a.seeds)
    result["leaks"] = {f"draw {seed}": leaks(a.copies, seed) for seed in (1, 2)}  # draw 0 set the threshold
    print("leaks:", result["leaks"], flush=True)
    result["outliers"] = outlier_check()
    print("outliers:", result["outliers"], flush=True)
    record("audit", result)


if __name__ == "__main__":
    main()
