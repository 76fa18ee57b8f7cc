"""Benchmark 3: test accuracy of `scratch` (30 epochs) and `augment` (100 epochs) on the
2,000-image dogs-vs-cats test split, with seed, epochs, best epoch and wall time.
Chapter (2nd ed.): 69.5 % and 83.5 %.

Long runs survive interruptions: the run folder lives outside the repository
($SMALLVISION_BENCH_RUNS, default ~/.cache/smallvision-bench/runs) and an unfinished run
with the same strategy, epochs and seed is resumed, not restarted.

    python bench/accuracy.py --strategy scratch            # train (or resume) and record
    python bench/accuracy.py --strategy augment --partial  # record where an unfinished run is:
                                                           # epochs done, and the best checkpoint's
                                                           # test accuracy so far
"""
import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _common import DATA, machine, need_data, record

CHAPTER = {"scratch": 0.695, "augment": 0.835}


def find_run(root, strategy, epochs, seed):
    from smallvision.runs import Run
    if not os.path.isdir(root):
        return None
    for name in sorted(os.listdir(root), reverse=True):
        try:
            run = Run.open(os.path.join(root, name))
            c = run.config
        except Exception:
            continue
        if (c.strategy, c.epochs, c.seed, c.data) == (strategy, epochs, seed, str(DATA)):
            return run
    return None


def summary(run, partial=False):
    import keras

    from smallvision.data import prepare
    from smallvision.data.decode import DecodeSpec
    from smallvision.metrics import classification_metrics
    from smallvision.fitting import predict_probabilities

    from smallvision.config import RunState
    c, history, state = run.config, run.read_history(), run.state or RunState()
    out = dict(strategy=c.strategy, seed=c.seed, epochs_planned=c.epochs,
               epochs_done=state.epochs_done, best_epoch=state.best_epoch,
               best_val_accuracy=round(max((r.get("val_accuracy", 0) for r in history), default=0), 4),
               train_seconds=round(sum(r["seconds"] for r in history), 1),
               median_epoch_seconds=round(sorted(r["seconds"] for r in history)[len(history) // 2], 2) if history else None,
               status=run.status.status, run=run.name, chapter_2nd_ed_test_accuracy=CHAPTER[c.strategy],
               backend=c.versions["backend"], image_size=list(c.image_size), batch_size=c.batch_size)
    if run.status.is_finished:
        m = run.metrics
        out.update(test_accuracy=m["test"]["accuracy"], test_loss=m["test"]["loss"],
                   validation_accuracy=m["validation"]["accuracy"])
    elif partial and state.best:
        prep = prepare(c.data, DecodeSpec(*c.image_size), progress=False)
        model = keras.saving.load_model(run.file("checkpoint", state.best))
        probs = predict_probabilities(model, prep.images["test"], 2)
        m = classification_metrics(probs, prep.labels["test"], list(c.class_names))
        out.update(partial=True, test_accuracy_of_best_checkpoint_so_far=m["accuracy"], test_loss=m["loss"])
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--strategy", choices=list(CHAPTER), required=True)
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--partial", action="store_true", help="only record the state of an unfinished run")
    a = p.parse_args()
    need_data()
    from smallvision import api
    from smallvision.strategies import get

    epochs = a.epochs or get(a.strategy).default_epochs
    root = os.environ.get("SMALLVISION_BENCH_RUNS") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                     "smallvision-bench", "runs")
    run = find_run(root, a.strategy, epochs, a.seed)
    if not a.partial:
        if run is None:
            run = api.train(str(DATA), a.strategy, out=root, epochs=epochs, seed=a.seed, verbose=2)
        elif not run.status.is_finished:
            run = api.resume(run.path, verbose=2)
    if run is None:
        sys.exit(f"no {a.strategy} run with {epochs} epochs and seed {a.seed} under {root}")
    record(f"accuracy_{a.strategy}", dict(benchmark=f"{a.strategy} on cats_vs_dogs_small, test split of 2,000",
                                          machine=machine(), **summary(run, a.partial)))


if __name__ == "__main__":
    main()
