"""`features-augment`: how many cached augmented views per image (K) the head needs, against
the exact mode (a fresh view of every image in every epoch), on all 5,000 dogs-vs-cats photos.

    python bench/views.py [--views 5,10,20,exact] [--seeds 3] [--exact-seeds 1] [--epochs 50]
    python bench/views.py --views exact --epochs 12 --tag _exact   # the exact mode alone, shorter

Every run uses the chapter's 50 epochs, Lite0 at 224 px, the gap head. The views are computed
once (K = 20 holds K = 5 and 10: view k of an image is the same pixels whatever K) and shared
by all seeds. Results are written after every run (a long benchmark keeps what finished) to
bench/results/views_<backbone>.json; the figures go to RESULTS.md by hand.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _common import DATA, machine, need_data, record


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--views", default="5,10,20,exact")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--exact-seeds", type=int, default=1, help="seeds of the exact mode (one is ~17 min here)")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--tag", default="", help="suffix of the results file (e.g. _exact for a separate exact run)")
    p.add_argument("--cache", help="cache folder to keep between invocations (default: a temporary one)")
    a = p.parse_args()
    need_data()
    tmp = tempfile.mkdtemp(prefix="sv-bench-views-")
    os.environ["SMALLVISION_CACHE"] = a.cache or os.path.join(tmp, "cache")
    from smallvision import api
    result = dict(benchmark="features-augment: cached views K vs exact", machine=machine(), data="cats_vs_dogs_small "
                  "(all 5,000)", backbone=a.backbone, epochs=a.epochs, runs=[])
    order = sorted(a.views.split(","), key=lambda v: (v == "exact", -int(v) if v != "exact" else 0))  # K=20 first
    for views in order:
        for seed in range(a.exact_seeds if views == "exact" else a.seeds):
            t = time.perf_counter()
            run = api.train(str(DATA), "features-augment", out=os.path.join(tmp, "runs"), epochs=a.epochs, seed=seed,
                            backbone=a.backbone, views=views if views == "exact" else int(views), verbose=0)
            m = run.metrics
            row = dict(views=views, seed=seed, wall_seconds=round(time.perf_counter() - t, 1),
                       head_seconds=round(sum(r["seconds"] for r in run.read_history()), 1),
                       validation_accuracy=m["validation"]["accuracy"], test_accuracy=m["test"]["accuracy"],
                       test_loss=m["test"]["loss"], best_epoch=m["best_epoch"])
            result["runs"].append(row)
            print(row, file=sys.stderr, flush=True)
            summary = {}
            for v in order:
                rows = [r for r in result["runs"] if r["views"] == v]
                if rows:
                    acc = [r["test_accuracy"] for r in rows]
                    summary[v] = dict(n=len(rows), test_mean=round(statistics.mean(acc), 4),
                                      test_std=round(statistics.pstdev(acc), 4),
                                      validation_mean=round(statistics.mean(r["validation_accuracy"] for r in rows), 4),
                                      wall_median=round(statistics.median(r["wall_seconds"] for r in rows), 1))
            result["summary"] = summary
            record(f"views_{a.backbone}{a.tag}", result)


if __name__ == "__main__":
    main()
