"""Read a ladder folder (or one run folder) into what the report shows — numbers only, no
rendering: the strategy table with mean ± std over seeds, per-run curves, confusion and
per-class figures, the test images the best model gets most wrong, and the data summary."""
import os
import statistics

from .._io import read_json
from ..config import LadderRecord
from ..errors import SmallvisionError
from ..runs import Run

WRONG = 12  # test images in the "most wrong" grid


CONFUSED = 10  # class pairs listed


def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _options(config):
    """The run's strategy and its options, read from config.json; (None, None) for a strategy this
    version does not have."""
    from .. import strategies
    try:
        strat = strategies.get(config.strategy)
        return strat, strat.read_options(config.options)
    except ValueError:
        return None, None


def _backbone(config):
    """The run's conv base (for a finetune run: its start run's), or None."""
    strat, options = _options(config)
    try:
        return strat.backbone(options) if strat else "?"
    except (ValueError, OSError):  # e.g. the start run of a finetune run was deleted since
        return getattr(options, "backbone", None) or "?"


def _head(config):
    """The pretrained strategies' head: pooling and classifier ("gap, chapter"); for a run
    fine-tuned from another, that run's; None for the convnets trained from scratch."""
    strat, options = _options(config)
    try:
        return strat.describe_head(options) if strat else "?"
    except (ValueError, OSError, AttributeError):  # a start run deleted or unreadable since
        return "?"


def accuracy(evaluation):
    """An :class:`~smallvision.config.Evaluation`'s accuracy, None for a split not evaluated."""
    return evaluation.accuracy if evaluation is not None else None


def _run_item(run):
    config, metrics, history = run.config, run.metrics, run.read_history()
    train_seconds = sum(r.get("seconds", 0) for r in history)
    n_train = sum(config.counts["train"])
    return dict(
        name=os.path.basename(os.path.normpath(run.path)), path=run.path, strategy=config.strategy,
        seed=config.seed, backbone=_backbone(config), head=_head(config), refit=config.refit, config=config,
        metrics=metrics, history=history,
        image_size=list(config.image_size), wall_seconds=run.status.wall_seconds or None,
        images_per_second=n_train * len(history) / train_seconds if train_seconds else None)


def _strategy_row(items):
    first = items[0]
    params = first["metrics"].params or {}
    val = _mean_std([accuracy(i["metrics"].validation) for i in items])
    test = _mean_std([accuracy(i["metrics"].test) for i in items])
    return dict(
        strategy=first["strategy"], backbone=first["backbone"] or "-", head=first["head"] or "-",
        refit=any(i["refit"] for i in items), seeds=len(items),
        selection_test_accuracy=_mean_std([accuracy(i["metrics"].chosen.test) for i in items]),
        trainable=params.get("trainable"), total=params.get("total"),
        epochs=[i["metrics"].epochs_done for i in items], best_epochs=[i["metrics"].best_epoch for i in items],
        val_accuracy=val, test_accuracy=test,
        test_loss=_mean_std([i["metrics"].test.loss if i["metrics"].test else None for i in items])[0],
        wall_seconds=_mean_std([i["wall_seconds"] for i in items])[0],
        images_per_second=_mean_std([i["images_per_second"] for i in items])[0],
        image_size=first["image_size"])


def _data_summary(item):
    config = item["config"]
    run = Run(item["path"])
    rejects = run.read_csv("rejects.csv")
    duplicates = [d for d in run.read_csv("duplicates.csv")
                  if d["kind"] != "duplicate within a split"]
    return dict(data=config.data, class_names=list(config.class_names), counts=config.counts,
                split_origin=config.split_origin, rejects=rejects, duplicates=duplicates,
                duplicates_within=int(config.duplicates) - len(duplicates))


def _most_wrong(item, n=WRONG):
    rows = [r for r in Run(item["path"]).read_predictions() if r["split"] == "test"]
    rows.sort(key=lambda r: -r["loss"])
    data = item["config"].data
    return [dict(r, file=r["path"] if os.path.isabs(r["path"]) else os.path.join(data, r["path"])) for r in rows[:n]]


def most_confused(item, n=CONFUSED):
    """The best run's test confusions, most first: ``[(true, predicted, images, share of true)]``."""
    m = item["metrics"].test
    if not m or not m.n:
        return []
    names = list(item["config"].class_names)
    cm = m.confusion_matrix
    pairs = [(names[i], names[j], int(cm[i][j]), cm[i][j] / max(sum(cm[i]), 1))
             for i in range(len(names)) for j in range(len(names)) if i != j and cm[i][j]]
    return sorted(pairs, key=lambda p: (-p[2], p[0], p[1]))[:n]


def collect(path):
    """A ladder folder (``ladder.json``) or a run folder (``config.json``) -> report contents."""
    path = os.fspath(path)
    if os.path.isfile(os.path.join(path, "ladder.json")):
        meta = LadderRecord.from_json(read_json(os.path.join(path, "ladder.json")))
        runs = [Run(os.path.join(path, "runs", name)) for name in meta.runs]
        title = f"smallvision ladder on {os.path.basename(os.path.normpath(meta.data))}"
    elif os.path.isfile(os.path.join(path, "config.json")):
        meta, runs = None, [Run(path)]
        title = f"smallvision run {os.path.basename(os.path.normpath(path))}"
    else:
        raise SmallvisionError(f"{path}: not a ladder folder (no ladder.json) or a run folder (no config.json)")
    done = [r for r in runs if r.status.is_finished and os.path.isfile(r.file("metrics.json"))]
    pending = [os.path.basename(os.path.normpath(r.path)) for r in runs if r not in done]
    if not done:
        raise SmallvisionError(f"{path}: no finished run to report on yet")
    items = [_run_item(r) for r in done]
    groups = {}
    for item in items:
        groups.setdefault(item["strategy"], []).append(item)
    best = max(items, key=lambda i: (accuracy(i["metrics"].validation) or 0,
                                     -((i["metrics"].validation.loss if i["metrics"].validation else 0) or 0)))
    from ..audit import latest_audit
    return dict(title=title, path=path, ladder=meta, items=items, pending=pending,
                rows=[_strategy_row(g) for g in groups.values()], groups=groups,
                data=_data_summary(items[0]), best=best, wrong=_most_wrong(best),
                confused=most_confused(best), audit=latest_audit(items[0]["config"].data))
