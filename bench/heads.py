"""Which head, and whether to refit (issue #17), measured with the project's own code on all
5,000 photos: for each backbone, strategy (features, features-augment) and classifier (the
chapter's Dense 256 + Dropout head, the linear one), 3 seeds of ``api.train(..., refit=True)``.
A refit run holds both answers: the selection model (chosen on validation: what a run without
``--refit`` gives, the same seed, the same model) and the final model retrained on
train + validation. Beside them, the reference the issue was measured against: a
scikit-learn logistic regression (lbfgs, C chosen on validation log-loss) on the very same
cached float16 vectors, trained on train and refitted on train + validation.

    python bench/heads.py [--backbones efficientnet_lite0,efficientnet_lite2] [--seeds 3] [--cache DIR]

With --cache pointing at a filled cache (e.g. a ladder's) nothing is extracted again; the
refit adds the validation images' views. The default head is the classifier with the best
mean validation accuracy over the seeds (then the lower mean validation loss), per backbone
and strategy. Written to bench/results/heads_<backbone>.json, one file per backbone.
"""
import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from _common import DATA, machine, need_data, record

CS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
STRATEGIES = ("features", "features-augment")
CLASSIFIERS = ("chapter", "linear")


def rows(images):
    return np.asarray(images.take(np.arange(len(images))), dtype=np.float32)


def logistic(x_train, y_train, x_val, y_val, x_test, y_test):
    """C by validation log-loss; test accuracy trained on train, and refitted on train + validation."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    grid = []
    for c in CS:
        m = LogisticRegression(C=c, max_iter=5000).fit(x_train, y_train)
        grid.append(dict(C=c, val_loss=round(float(log_loss(y_val, m.predict_proba(x_val))), 5),
                         val_accuracy=float(m.score(x_val, y_val)), test_accuracy=float(m.score(x_test, y_test))))
    best = min(grid, key=lambda r: r["val_loss"])
    refit = LogisticRegression(C=best["C"], max_iter=5000).fit(np.concatenate([x_train, x_val]),
                                                                np.concatenate([y_train, y_val]))
    return dict(grid=grid, chosen_C=best["C"], test_accuracy=best["test_accuracy"],
                refit_test_accuracy=float(refit.score(x_test, y_test)))


def stats(values):
    return dict(mean=statistics.fmean(values), std=statistics.stdev(values) if len(values) > 1 else None)


def one_backbone(backbone, seeds, views, tmp):
    from smallvision import api
    from smallvision.backbones.registry import get
    from smallvision.data import DecodeSpec, prepare
    from smallvision.strategies import features

    size = get(backbone).native_size
    from smallvision.strategies import get as get_strategy
    o = get_strategy("features").read_options({"backbone": backbone, "head": "gap"})
    result = dict(benchmark="heads and refit on all 5,000 photos (issue #17)", machine=machine(), backbone=backbone,
                  image_size=size, data="cats_vs_dogs_small (all 5,000)", seeds=seeds, views=views)
    prep = prepare(str(DATA), DecodeSpec(size, size), progress=False)
    feats = features.cached_features(prep, o, progress=True)
    x = {s: rows(feats[s]) for s in ("train", "validation", "test")}
    y = {s: np.asarray(prep.labels[s]) for s in x}
    result["logistic_features"] = logistic(x["train"], y["train"], x["validation"], y["validation"],
                                           x["test"], y["test"])
    print(backbone, "logistic regression on the features:", result["logistic_features"]["test_accuracy"],
          "refit:", result["logistic_features"]["refit_test_accuracy"], flush=True)
    result["runs"], result["summary"] = [], {}
    for strategy in STRATEGIES:
        for classifier in CLASSIFIERS:
            runs = []
            for seed in range(seeds):
                t = time.perf_counter()
                run = api.train(str(DATA), strategy, out=os.path.join(tmp, "runs"), seed=seed, backbone=backbone,
                                head="gap", classifier=classifier, refit=True, verbose=0, progress=False,
                                **({"views": views} if strategy == "features-augment" else {}))
                m = run.metrics
                runs.append(dict(strategy=strategy, classifier=classifier, seed=seed, best_epoch=m["best_epoch"],
                                 val_accuracy=m["validation"]["accuracy"], val_loss=m["validation"]["loss"],
                                 test_accuracy=m["selection"]["test"]["accuracy"],
                                 refit_test_accuracy=m["test"]["accuracy"],
                                 seconds=round(time.perf_counter() - t, 1)))
                print(backbone, runs[-1], flush=True)
            result["runs"] += runs
            result["summary"][f"{strategy}/{classifier}"] = {
                k: stats([r[k] for r in runs]) for k in ("val_accuracy", "val_loss", "test_accuracy",
                                                         "refit_test_accuracy", "seconds")}
        by = {c: result["summary"][f"{strategy}/{c}"] for c in CLASSIFIERS}
        result["summary"][f"{strategy}/chosen on validation"] = min(
            CLASSIFIERS, key=lambda c: (-round(by[c]["val_accuracy"]["mean"], 6), by[c]["val_loss"]["mean"]))
        print(backbone, strategy, "chosen on validation:", result["summary"][f"{strategy}/chosen on validation"],
              flush=True)
    record(f"heads_{backbone}", result)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--backbones", default="efficientnet_lite0,efficientnet_lite2")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--views", type=int, default=10)
    p.add_argument("--cache", help="cache folder (default: a temporary one, so everything is extracted)")
    a = p.parse_args()
    need_data()
    tmp = tempfile.mkdtemp(prefix="sv-bench-heads-")
    os.environ["SMALLVISION_CACHE"] = a.cache or os.path.join(tmp, "cache")
    for backbone in a.backbones.split(","):
        one_backbone(backbone, a.seeds, a.views, tmp)


if __name__ == "__main__":
    main()
