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
import logging
import os
import shutil
import statistics
import sys
import time

from ._io import read_json, write_json_atomic
from .errors import SmallvisionError
from .report.render import duration
from .runs import Run

LADDER = ("scratch", "augment", "features", "features-augment", "finetune")
SETTINGS = ("data", "image_size", "backbone", "epochs_scale", "batch_size", "split")  # fixed per folder


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


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
                                       f"Received: {seeds!r}")
            out[name.strip()] = int(n)
    if any(n < 1 for n in out.values()):
        raise SmallvisionError(f"seeds must be at least 1. Received: {seeds!r}")
    return out


def plan(strategies, seeds, epochs_scale, backbone=None):
    """The runs of a ladder, in order: [{name, strategy, seed, epochs, options}]."""
    from .strategies import features_augment, get
    from .strategies.pretrained import DEFAULT_BACKBONE
    runs = []
    for strategy in strategies:
        strat = get(strategy)
        for seed in range(seeds[strategy]):
            options = {}
            if "backbone" in getattr(strat, "OPTIONS", ()):
                options["backbone"] = backbone or DEFAULT_BACKBONE
            if strategy == "finetune":
                if "features-augment" in strategies and seed < seeds["features-augment"]:
                    options = {"start": f"features-augment-seed{seed}"}  # resolved to the run folder later
                else:
                    options["head_epochs"] = max(1, round(features_augment.DEFAULT_EPOCHS * epochs_scale))
            runs.append(dict(name=f"{strategy}-seed{seed}", strategy=strategy, seed=seed, options=options,
                             epochs=max(1, round(strat.DEFAULT_EPOCHS * epochs_scale))))
    return runs


def _settings(data, image_size, backbone, epochs_scale, batch_size, split):
    from .backbones.registry import get as get_backbone
    from .strategies.pretrained import DEFAULT_BACKBONE
    if image_size is None:  # one size for every strategy: the backbone's own (the chapter: 180 for VGG16)
        size = get_backbone(backbone or DEFAULT_BACKBONE).native_size
        image_size = (size, size)
    elif isinstance(image_size, int):
        image_size = (image_size, image_size)
    return dict(data=os.path.abspath(data), image_size=[int(v) for v in image_size],
                backbone=backbone or DEFAULT_BACKBONE, epochs_scale=float(epochs_scale),
                batch_size=int(batch_size), split=str(split))


def open_folder(out, settings):
    """Create the ladder folder, or check that an existing one was made with the same settings."""
    path = os.path.join(out, "ladder.json")
    if os.path.isfile(path):
        old = read_json(path)
        for key in SETTINGS:
            if old.get(key) != settings[key]:
                raise SmallvisionError(f"{out}: this ladder was made with {key}={old.get(key)!r}, not "
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
               batch_size=32, split="0.7,0.15,0.15", progress=True, verbose=0, report=True):
    """Train every strategy of the ladder on ``data``; returns the ladder folder.

    Args:
        strategies: names in any order (run in the chapter's order); default: all five.
        backbone: conv base of the pretrained strategies (default efficientnet_lite0).
        epochs_scale: multiplies every strategy's default epochs (0.1: a tenth, at least 1).
        seeds: runs per strategy: N, or "STRATEGY=N,..." (others 1).
        image_size: one size for every strategy; default the backbone's native size.
    """
    from . import api
    from .strategies import STRATEGIES

    strategies = list(strategies or LADDER)
    for s in strategies:
        if s not in STRATEGIES:
            raise SmallvisionError(f"unknown strategy {s!r}; expected some of: {', '.join(STRATEGIES)}")
    strategies = [s for s in STRATEGIES if s in strategies]  # the chapter's order
    if not isinstance(epochs_scale, (int, float)) or epochs_scale <= 0:
        raise SmallvisionError(f"epochs scale must be a positive number. Received: {epochs_scale!r}")
    if not os.path.isdir(data):
        raise SmallvisionError(f"{data}: no such data folder")
    out = out or os.path.join("ladders", os.path.basename(os.path.normpath(os.path.abspath(data))))
    settings = _settings(data, image_size, backbone, epochs_scale, batch_size, split)
    meta = open_folder(out, settings)
    entries = plan(strategies, parse_seeds(seeds, strategies), epochs_scale, backbone)
    meta["runs"] = meta["runs"] + [e["name"] for e in entries if e["name"] not in meta["runs"]]
    write_json_atomic(os.path.join(out, "ladder.json"), meta)

    # one process builds many models: TensorFlow's "retracing" warnings say nothing useful here
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    for i, entry in enumerate(entries):
        path = os.path.join(out, "runs", entry["name"])
        run = Run(path)
        header = f"ladder {i + 1}/{len(entries)}: {entry['strategy']}, seed {entry['seed']}"
        if run.status.get("status") == "finished":
            if progress:
                _log(f"{header}: finished earlier, kept ({api.describe(run)})")
            continue
        options = dict(entry["options"])
        if "start" in options:
            options["start"] = os.path.join(out, "runs", options["start"])
        if progress:
            _log(f"{header}: {entry['epochs']} epochs; ladder {_eta(out, entries[i:])}")
        if os.path.isfile(run.file("config.json")):
            api.resume(path, verbose=verbose, progress=progress, data=settings["data"])
            continue
        if os.path.isdir(path):  # killed before its config was written: nothing to keep
            shutil.rmtree(path)
        os.makedirs(os.path.join(out, "runs"), exist_ok=True)
        api.train(settings["data"], entry["strategy"], epochs=entry["epochs"], batch_size=batch_size,
                  image_size=tuple(settings["image_size"]), seed=entry["seed"], split=split, verbose=verbose,
                  progress=progress, run_dir=path, **options)
    if progress:
        _log(f"ladder done in {duration(time.perf_counter() - t0)} (this session)")
    if report:
        from .report import write_report
        write_report(out)
    return out
