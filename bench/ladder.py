"""The full ladder on dogs vs cats: every strategy, the same data, splits and image size, with
several seeds for the pretrained strategies; records the report's table.

    python bench/ladder.py --epochs-scale 0.1 --image-size 180 \
        --seeds scratch=1,augment=1,features=3,features-augment=3,finetune=3

The ladder folder lives outside the repository (~/.cache/smallvision-bench/ladders/<name>);
re-running the same command continues an interrupted ladder. Its report.html/report.md stay
there (they name this machine's paths); the table goes to bench/results/ladder_<name>.json.
"""
import argparse
import os
import shutil
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _common import DATA, machine, need_data, record

CHAPTER = {"scratch": 0.695, "augment": 0.835, "features": 0.97, "features-augment": 0.975, "finetune": 0.985}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs-scale", type=float, default=1.0)
    p.add_argument("--seeds", default="scratch=1,augment=1,features=3,features-augment=3,finetune=3")
    p.add_argument("--image-size", type=int)
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--strategies")
    p.add_argument("--cache", help="SMALLVISION_CACHE for this ladder; with --fresh it starts empty (every cold "
                   "cache counted, as a new user's first ladder)")
    p.add_argument("--fresh", action="store_true", help="start the ladder folder (and --cache) empty")
    p.add_argument("--views", help="features-augment/finetune views (default: the strategy's)")
    p.add_argument("--patience", type=int, help="every run stops after N epochs without a lower val_loss")
    p.add_argument("--record-only", action="store_true", help="record the finished runs of the ladder folder "
                   "as they are (while it is still running, or after an interruption)")
    a = p.parse_args()
    need_data()
    if a.cache:
        if a.fresh:
            shutil.rmtree(a.cache, ignore_errors=True)
        os.environ["SMALLVISION_CACHE"] = a.cache
    from smallvision import api
    from smallvision.report.collect import collect

    name = f"{a.backbone}-x{a.epochs_scale:g}-{a.image_size or 'native'}" + (f"-p{a.patience}" if a.patience else "")
    out = os.path.join(os.path.expanduser("~"), ".cache", "smallvision-bench", "ladders", name)
    if a.fresh and not a.record_only:
        shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    if not a.record_only:
        api.ladder(str(DATA), out=out, strategies=a.strategies and a.strategies.split(","), backbone=a.backbone,
                   epochs_scale=a.epochs_scale, seeds=a.seeds, image_size=a.image_size, views=a.views,
                   patience=a.patience)
    wall = time.perf_counter() - t
    print(api.summary_table(out))
    report = collect(out)
    rows = []
    for r in report["rows"]:
        rows.append({k: r[k] for k in ("strategy", "backbone", "seeds", "trainable", "total", "epochs", "best_epochs",
                                       "val_accuracy", "test_accuracy", "test_loss", "wall_seconds",
                                       "images_per_second", "image_size")}
                    | {"chapter_2nd_ed_test_accuracy": CHAPTER.get(r["strategy"])})
    record(f"ladder_{name}", dict(
        benchmark="smallvision ladder on cats_vs_dogs_small (train 2,000 / validation 1,000 / test 2,000)",
        machine=machine(), epochs_scale=a.epochs_scale, seeds=a.seeds, backbone=a.backbone,
        strategies=a.strategies, fresh_cache=bool(a.cache and a.fresh), views=a.views, patience=a.patience,
        wall_seconds_this_invocation=round(wall, 1), rows=rows, not_finished=report["pending"],
        note="accuracy as (mean, std over seeds or null); wall_seconds: mean per run"))


if __name__ == "__main__":
    main()
