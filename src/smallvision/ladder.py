"""The ladder: the chapter's comparison as one command — every strategy on the same data,
splits, image size and seeds, in a folder that a re-run continues and a report reads.

::

    ladder/                        (--out; default: ladders/<data folder name>)
      ladder.json                  settings, and the run names in order
      runs/<strategy>-seed<k>/     one ordinary run folder each (see runs.py)
      report.md, report.html       written at the end (smallvision report rewrites them)

Re-running the same command keeps finished runs, resumes an unfinished one from its last
checkpoint, and starts those not begun. ``finetune`` starts from the ``features-augment``
run of the same seed when the ladder has one (as the chapter does), so the head is not
trained twice.
"""
import os
import shutil
import statistics
import time

from . import runner
from . import strategies as strategies_module
from ._io import read_json, write_json_atomic
from .checks import DEFAULT_SPLIT, check_positive, image_size as parse_image_size, split_fractions
from .errors import SmallvisionError
from .progress import duration, log
from .runs import Run
from .strategies import LADDER
from .strategies.pretrained import DEFAULT_BACKBONE

SETTINGS = ("data", "image_size", "backbone", "epochs_scale", "batch_size", "split", "patience", "classifier",
            "refit")  # fixed per folder
_OLD = {"classifier": None, "refit": False}  # what a ladder.json written before a setting existed meant


def parse_seeds(seeds, strategies):
    """``3`` or ``"3"`` (every strategy) or ``"scratch=1,augment=1,features=3"`` -> {strategy: n}."""
    if isinstance(seeds, dict):
        out = {s: int(seeds.get(s, 1)) for s in strategies}
    elif isinstance(seeds, int) or str(seeds).strip().isdigit():
        out = {s: int(seeds) for s in strategies}
    else:
        out = {s: 1 for s in strategies}
        for part in str(seeds).split(","):
            name, _, n = part.partition("=")
            if name.strip() not in out or not n.strip().isdigit():
                raise SmallvisionError(f"seeds must be N or STRATEGY=N,... over {', '.join(strategies)}. "
                                       f"Received: seeds={seeds!r}")
            out[name.strip()] = int(n)
    if any(n < 1 for n in out.values()):
        raise SmallvisionError(f"seeds must be at least 1. Received: seeds={seeds!r}")
    return out


def plan(strategies_, seeds, epochs_scale, backbone=None, views=None, classifier=None):
    """The runs of a ladder, in order: [{name, strategy, seed, epochs, options}]."""
    runs = []
    for strategy in strategies_:
        strat = strategies_module.get(strategy)
        for seed in range(seeds[strategy]):
            options = {}
            if "backbone" in strat.options:
                options["backbone"] = backbone or DEFAULT_BACKBONE
            if views is not None and "views" in strat.options:
                options["views"] = views
            if classifier is not None and "classifier" in strat.options:
                options["classifier"] = classifier
            if strategy == "finetune":
                if "features-augment" in strategies_ and seed < seeds["features-augment"]:
                    options = {"start": f"features-augment-seed{seed}", **({"views": views} if views else {})}
                    # the start is resolved to the run folder later
                else:
                    head = strategies_module.get("features-augment").default_epochs
                    options["head_epochs"] = max(1, round(head * epochs_scale))
            runs.append(dict(name=f"{strategy}-seed{seed}", strategy=strategy, seed=seed, options=options,
                             epochs=max(1, round(strat.default_epochs * epochs_scale))))
    return runs


def _settings(data, image_size, backbone, epochs_scale, batch_size, split, patience=None, classifier=None,
              refit=False):
    from .backbones.registry import get as get_backbone
    if image_size is None:  # one size for every strategy: the backbone's own (the chapter: 180 for VGG16)
        image_size = get_backbone(backbone or DEFAULT_BACKBONE).native_size
    return dict(data=os.path.abspath(data), image_size=list(parse_image_size(image_size)),
                backbone=backbone or DEFAULT_BACKBONE, epochs_scale=float(epochs_scale),
                batch_size=int(batch_size), split=str(split), patience=patience, classifier=classifier,
                refit=bool(refit))


def open_folder(out, settings):
    """Create the ladder folder, or check that an existing one was made with the same settings."""
    path = os.path.join(out, "ladder.json")
    if os.path.isfile(path):
        old = read_json(path)
        for key in SETTINGS:
            if old.get(key, _OLD.get(key)) != settings[key]:
                raise SmallvisionError(f"{out}: this ladder was made with {key}={old.get(key, _OLD.get(key))!r}, not "
                                       f"{settings[key]!r}; use another --out for a new ladder")
        return old
    os.makedirs(out, exist_ok=True)
    meta = dict(settings, runs=[])
    write_json_atomic(path, meta)
    return meta


def _seconds_per_epoch(out, strategy, names):
    """Mean epoch time of this ladder's finished runs of ``strategy`` (None: none yet)."""
    times = []
    for name in names:
        run = Run(os.path.join(out, "runs", name))
        if name.startswith(strategy + "-seed") and run.status.get("status") == "finished":
            times += [r["seconds"] for r in run.read_history()]
    return statistics.fmean(times) if times else None


def _eta(out, todo):
    """What is left, timed by this ladder's finished runs of the same strategies."""
    names = _run_names(out)
    known, unknown = 0.0, set()
    for entry in todo:
        spe = _seconds_per_epoch(out, entry["strategy"], names)
        if spe is None:
            unknown.add(entry["strategy"])
        else:
            known += spe * (entry["epochs"] + entry["options"].get("head_epochs", 0))
    if not known:
        return "ETA unknown until a run of each strategy has finished"
    return f"ETA {duration(known)}" + (f" + {', '.join(sorted(unknown))} (not timed yet)" if unknown else "")


def _run_names(out):
    folder = os.path.join(out, "runs")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def run_ladder(data, out=None, strategies=None, backbone=None, epochs_scale=1.0, seeds=1, image_size=None,
               batch_size=32, split=DEFAULT_SPLIT, progress=True, verbose=0, report=True, views=None, patience=None,
               classifier=None, refit=False, devices=None):
    """Train every strategy of the ladder on ``data``; returns the ladder folder.

    Args:
        strategies: names in any order (run in the chapter's order); default: all five.
        backbone: conv base of the pretrained strategies (default efficientnet_lite0).
        epochs_scale: multiplies every strategy's default epochs (0.1: a tenth, at least 1).
        seeds: runs per strategy: N, or "STRATEGY=N,..." (others 1).
        image_size: one size for every strategy; default the backbone's native size.
        views: augmented views per image of features-augment and finetune (default: theirs).
        patience: every run stops after this many epochs without a lower val_loss (None: the
            chapter's epochs in full); the best epoch is kept either way.
        classifier: the pretrained strategies' head, "chapter" or "linear" (None: the default).
        refit: every run's final model is retrained on train + validation for its chosen epoch
            (``runner.train(refit=True)``); the report shows both figures. finetune starts from
            the features-augment run's selection model, and its refit from that run's final one.
        devices: every run's devices (``runner.train``): None or 1, N or "all"; not a setting of
            the folder (a ladder may continue on other devices: the global batch is the same).
    """
    from . import distribute
    chosen = list(strategies or LADDER)
    known = strategies_module.names()
    for s in chosen:
        if s not in known:
            raise SmallvisionError(f"unknown strategy; expected some of: {', '.join(known)}. "
                                   f"Received: strategies={list(strategies)!r}")
    chosen = [s for s in known if s in chosen]  # the chapter's order
    check_positive("epochs_scale", epochs_scale)
    check_positive("batch_size", batch_size, integer=True)
    if patience is not None:
        patience = check_positive("patience", patience, integer=True)
    split = ",".join(map(str, split_fractions(split)))
    if not os.path.isdir(data):
        raise SmallvisionError(f"{data}: no such data folder")
    out = out or os.path.join("ladders", os.path.basename(os.path.normpath(os.path.abspath(data))))
    if classifier is not None:
        from .strategies.pretrained import options as pretrained_options
        try:
            pretrained_options({"classifier": classifier})
        except ValueError as e:
            raise SmallvisionError(str(e)) from None
    settings = _settings(data, image_size, backbone, epochs_scale, batch_size, split, patience, classifier, refit)
    dev = distribute.resolve(devices)
    if not dev.writer:  # the first process writes the ladder; this one trains the same models in a private copy
        out, progress, report = dev.folder(out), False, False
    meta = open_folder(out, settings)
    entries = plan(chosen, parse_seeds(seeds, chosen), epochs_scale, backbone, views, classifier)
    meta["runs"] = meta["runs"] + [e["name"] for e in entries if e["name"] not in meta["runs"]]
    write_json_atomic(os.path.join(out, "ladder.json"), meta)

    t0 = time.perf_counter()
    _fill_caches(out, entries, settings, split, progress)
    for i, entry in enumerate(entries):
        path = os.path.join(out, "runs", entry["name"])
        run = Run(path)
        header = f"ladder {i + 1}/{len(entries)}: {entry['strategy']}, seed {entry['seed']}"
        if run.status.get("status") == "finished":
            if progress:
                log(f"{header}: finished earlier, kept ({runner.describe(run)})")
            continue
        options = dict(entry["options"])
        if "start" in options:
            options["start"] = os.path.join(out, "runs", options["start"])
        if progress:
            log(f"{header}: {entry['epochs']} epochs; ladder {_eta(out, entries[i:])}")
        if os.path.isfile(run.file("config.json")):
            run = runner.resume(path, verbose=verbose, progress=progress, data=settings["data"], devices=dev)
        else:
            if os.path.isdir(path):  # killed before its config was written: nothing to keep
                shutil.rmtree(path)
            os.makedirs(os.path.join(out, "runs"), exist_ok=True)
            run = runner.train(settings["data"], entry["strategy"], epochs=entry["epochs"], batch_size=batch_size,
                               image_size=tuple(settings["image_size"]), seed=entry["seed"], split=split,
                               patience=patience, refit=refit, verbose=verbose, progress=progress, run_dir=path,
                               devices=dev, **options)
        if progress:
            log(runner.describe(run))
    if progress:
        log(f"ladder done in {duration(time.perf_counter() - t0)} (this session)")
    if report:
        from .report import write_report
        write_report(out)
    return out


def _fill_caches(out, entries, settings, split, progress):
    """Before the first run: one frozen pass for what the pretrained strategies will read (the
    features, the views, fine-tuning's maps), when finetune is among the runs still to do.
    Run by run, features-augment would compute the views once and finetune its maps in a
    second pass over the same views."""
    by_name = {e["name"]: e for e in entries}
    seeds = {}
    for e in entries:
        if e["strategy"] == "finetune" and Run(os.path.join(out, "runs", e["name"])).status.get("status") != "finished":
            start = by_name.get(e["options"].get("start"))
            seeds.setdefault(e["seed"], dict(start["options"] if start else e["options"]))
    for seed, options in sorted(seeds.items()):
        if progress:
            log(f"ladder: one frozen pass for the pretrained strategies' caches (seed {seed}'s split)")
        runner.fill_caches(settings["data"], "finetune", options, tuple(settings["image_size"]), split, seed, progress,
                           refit=settings["refit"])


def ladder(data, out=None, strategies=None, backbone=None, epochs_scale=1.0, seeds=1, image_size=None,
           batch_size=32, split=DEFAULT_SPLIT, progress=True, views=None, patience=None, classifier=None, refit=False,
           devices=None):
    """Train the chapter's strategies on ``data`` into one ladder folder and write its report.

    Re-running with the same ``out`` continues an interrupted ladder. Returns the folder.
    See :func:`run_ladder` for the arguments.
    """
    return run_ladder(data, out, strategies, backbone, epochs_scale, seeds, image_size, batch_size, split,
                      progress=progress, verbose=0, views=views, patience=patience, classifier=classifier, refit=refit,
                      devices=devices)
