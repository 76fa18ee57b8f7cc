"""Which head on the cached features (issue #17's question), measured on the project's own cache:
the chapter's head as the `features` strategy trains it (3 seeds, through `api.train`) beside a
logistic regression (scikit-learn, lbfgs, C chosen on validation log-loss) on the very same
float16 vectors — trained on train, and refitted on train + validation with the chosen C.

    python bench/heads.py [--backbone efficientnet_lite0] [--seeds 3] [--cache DIR]

With --cache pointing at a ladder's cache (e.g. the one `ladder.py --cache` filled) nothing is
extracted again. Also the same regression on features-augment's cached views (10 per training
image) when they are in the cache. Written to bench/results/heads_<backbone>.json.
"""
import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from _common import DATA, machine, need_data, record

CS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def rows(images):
    return np.asarray(images.take(np.arange(len(images))), dtype=np.float32)


def logistic(x_train, y_train, x_val, y_val, x_test, y_test):
    """C by validation log-loss; test accuracy trained on train, and refitted on train + validation."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    grid = []
    for c in CS:
        t = time.perf_counter()
        m = LogisticRegression(C=c, max_iter=5000).fit(x_train, y_train)
        grid.append(dict(C=c, seconds=round(time.perf_counter() - t, 2),
                         val_loss=round(float(log_loss(y_val, m.predict_proba(x_val))), 5),
                         val_accuracy=float(m.score(x_val, y_val)), test_accuracy=float(m.score(x_test, y_test))))
    best = min(grid, key=lambda r: r["val_loss"])
    refit = LogisticRegression(C=best["C"], max_iter=5000).fit(np.concatenate([x_train, x_val]),
                                                                np.concatenate([y_train, y_val]))
    return dict(grid=grid, chosen_C=best["C"], test_accuracy=best["test_accuracy"],
                refit_test_accuracy=float(refit.score(x_test, y_test)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--views", type=int, default=10)
    p.add_argument("--cache", help="cache folder (default: a temporary one, so everything is extracted)")
    a = p.parse_args()
    need_data()
    tmp = tempfile.mkdtemp(prefix="sv-bench-heads-")
    os.environ["SMALLVISION_CACHE"] = a.cache or os.path.join(tmp, "cache")
    from smallvision import api
    from smallvision.backbones.registry import get
    from smallvision.data import DecodeSpec, prepare
    from smallvision.strategies import features, features_augment

    size = get(a.backbone).native_size
    o = {"backbone": a.backbone, "head": "gap"}
    prep = prepare(str(DATA), DecodeSpec(size, size), progress=False)
    feats = features.cached_features(prep, o, progress=True)
    x = {s: rows(feats[s]) for s in ("train", "validation", "test")}
    y = {s: np.asarray(prep.labels[s]) for s in x}
    result = dict(benchmark="head on cached features: the chapter's head vs logistic regression",
                  machine=machine(), backbone=a.backbone, image_size=size, data="cats_vs_dogs_small (all 5,000)")
    result["logistic_features"] = logistic(x["train"], y["train"], x["validation"], y["validation"],
                                           x["test"], y["test"])
    print("logistic regression on the features:", result["logistic_features"]["test_accuracy"],
          "refit:", result["logistic_features"]["refit_test_accuracy"], flush=True)

    views = features.cached_views(prep, o, a.views, progress=True)  # cached by a ladder: no work
    xv = rows(views)
    yv = np.repeat(y["train"], a.views)
    result["logistic_views"] = logistic(xv, yv, x["validation"], y["validation"], x["test"], y["test"])
    result["logistic_views"]["views"] = a.views
    print("logistic regression on the views:", result["logistic_views"]["test_accuracy"],
          "refit:", result["logistic_views"]["refit_test_accuracy"], flush=True)

    chapter = []
    for seed in range(a.seeds):
        run = api.train(str(DATA), "features", out=os.path.join(tmp, "runs"), seed=seed, backbone=a.backbone,
                        head="gap", verbose=0, progress=False)
        chapter.append(dict(seed=seed, best_epoch=run.metrics["best_epoch"],
                            val_accuracy=run.metrics["validation"]["accuracy"],
                            test_accuracy=run.metrics["test"]["accuracy"]))
        print("chapter's head, seed", seed, chapter[-1], flush=True)
    result["chapter_head"] = dict(runs=chapter, test_mean=float(np.mean([r["test_accuracy"] for r in chapter])),
                                  test_std=float(np.std([r["test_accuracy"] for r in chapter], ddof=1))
                                  if len(chapter) > 1 else None)
    result["default_views"] = features_augment.DEFAULT_VIEWS
    record(f"heads_{a.backbone}", result)


if __name__ == "__main__":
    main()
