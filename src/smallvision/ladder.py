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
import dataclasses
import os
import shutil
import statistics
import time

from . import mixed, runner
from . import strategies as strategies_module
from ._io import read_json, write_json_atomic
from .checks import DEFAULT_SPLIT, check_positive, image_size as parse_image_size, split_fractions
from .config import LadderRecord
from .errors import SmallvisionError
from .progress import duration, log
from .runs import Run
from .strategies import LADDER, TrainSpec
from .strategies.options import CLASSIFIERS, DEFAULT_BACKBONE


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


@dataclasses.dataclass(frozen=True)
class Entry:
    """One run of a ladder: its name, strategy, seed, epochs (its last stage's) and its options
    (the strategy's ``Options``; a start run is a run folder of the ladder)."""

    name: str
    strategy: str
    seed: int
    epochs: int
    options: object


class Plan:
    """The runs of a ladder, in order, and what a strategy's :meth:`~Strategy.in_ladder` asks about
    them (the other runs, the scaled epochs)."""

    def __init__(self, strategies, seeds, epochs_scale, values=None, runs_folder="runs"):
        self.seeds, self.epochs_scale, self.runs_folder = seeds, epochs_scale, runs_folder
        self.entries = []
        for strategy in strategies:
            strat = strategies_module.get(strategy)
            for seed in range(seeds[strategy]):
                self.entries.append(Entry(f"{strategy}-seed{seed}", strategy, seed, self.epochs(strategy),
                                          strat.in_ladder(dict(values or {}), seed, self)))

    def epochs(self, strategy):
        """The default epochs of ``strategy``, scaled (at least 1)."""
        return max(1, round(strategies_module.get(strategy).default_epochs * self.epochs_scale))

    def run(self, strategy, seed):
        """The run folder of ``strategy``'s run of ``seed`` in this ladder, or None when it has none."""
        if seed < self.seeds.get(strategy, 0):
            return os.path.join(self.runs_folder, f"{strategy}-seed{seed}")
        return None

    def options_of(self, run_folder):
        """The options of the ladder run at ``run_folder`` (None: not one of this ladder's)."""
        for e in self.entries:
            if run_folder is not None and os.path.abspath(run_folder) == os.path.abspath(
                    os.path.join(self.runs_folder, e.name)):
                return e.options
        return None

    def spec(self, entry, record):
        """The :class:`TrainSpec` of ``entry`` with the ladder's settings (made when it begins: a
        start run must have finished first)."""
        return TrainSpec.parse(entry.strategy, epochs=entry.epochs, batch_size=record.batch_size,
                               image_size=tuple(record.image_size), seed=entry.seed, split=record.split,
                               patience=record.patience, refit=record.refit, options=entry.options)

    def total_epochs(self, entry):
        """Every epoch the entry trains, its head stage included."""
        return strategies_module.get(entry.strategy).total_epochs(entry.epochs, entry.options)


def plan(strategies_, seeds, epochs_scale, backbone=None, views=None, classifier=None, runs_folder="runs"):
    """The runs of a ladder, in order (:class:`Plan`)."""
    return Plan(strategies_, seeds, epochs_scale,
                dict(backbone=backbone or DEFAULT_BACKBONE, views=views, classifier=classifier), runs_folder)


def _record(data, image_size, backbone, epochs_scale, batch_size, split, patience=None, classifier=None,
            refit=False):
    from .backbones.registry import get as get_backbone
    if image_size is None:  # one size for every strategy: the backbone's own (the chapter: 180 for VGG16)
        image_size = get_backbone(backbone or DEFAULT_BACKBONE).native_size
    return LadderRecord(data=os.path.abspath(data), image_size=parse_image_size(image_size),
                        backbone=backbone or DEFAULT_BACKBONE, epochs_scale=float(epochs_scale),
                        batch_size=int(batch_size), split=str(split), patience=patience, classifier=classifier,
                        refit=bool(refit))


def open_folder(out, record):
    """Create the ladder folder, or check that an existing one was made with the same settings;
    returns its :class:`~smallvision.config.LadderRecord`."""
    path = os.path.join(out, "ladder.json")
    if os.path.isfile(path):
        old = LadderRecord.from_json(read_json(path))
        differs = old.differs(record)
        if differs:
            key, was, now = differs
            was, now = (list(v) if isinstance(v, tuple) else v for v in (was, now))
            raise SmallvisionError(f"{out}: this ladder was made with {key}={was!r}, not "
                                   f"{now!r}; use another --out for a new ladder")
        return old
    os.makedirs(out, exist_ok=True)
    write_json_atomic(path, record.to_json())
    return record


def _seconds_per_epoch(out, strategy, names):
    """Mean epoch time of this ladder's finished runs of ``strategy`` (None: none yet)."""
    times = []
    for name in names:
        run = Run(os.path.join(out, "runs", name))
        if name.startswith(strategy + "-seed") and run.status.is_finished:
            times += [r["seconds"] for r in run.read_history()]
    return statistics.fmean(times) if times else None


def _eta(out, todo, ladder_plan):
    """What is left, timed by this ladder's finished runs of the same strategies."""
    names = _run_names(out)
    known, unknown = 0.0, set()
    for entry in todo:
        spe = _seconds_per_epoch(out, entry.strategy, names)
        if spe is None:
            unknown.add(entry.strategy)
        else:
            known += spe * ladder_plan.total_epochs(entry)
    if not known:
        return "ETA unknown until a run of each strategy has finished"
    return f"ETA {duration(known)}" + (f" + {', '.join(sorted(unknown))} (not timed yet)" if unknown else "")


def _run_names(out):
    folder = os.path.join(out, "runs")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def ladder(data, out=None, strategies=None, backbone=None, epochs_scale=1.0, seeds=1, image_size=None,
           batch_size=32, split=DEFAULT_SPLIT, progress=True, verbose=0, report=True, views=None, patience=None,
           classifier=None, refit=False, devices=None, mixed_precision="auto"):
    """Train the chapter's strategies on ``data`` into one ladder folder and write its report;
    re-running with the same ``out`` continues an interrupted ladder. Returns the folder.

    Args:
        out: the ladder folder (default: ladders/<data folder name>).
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
        mixed_precision: every run's (``runner.train``; :mod:`smallvision.mixed`): "auto", "off",
            "float16" or "bfloat16"; not a setting of the folder either (each run records its own).
        report: write report.md and report.html at the end.

    Each run's :class:`~smallvision.strategies.TrainSpec` is built from these settings and the
    strategy's own hook (:meth:`~smallvision.strategies.Strategy.in_ladder`: finetune starts from
    the features-augment run of the same seed).
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
    mixed_precision = mixed.parse(mixed_precision)
    check_positive("batch_size", batch_size, integer=True)
    if patience is not None:
        patience = check_positive("patience", patience, integer=True)
    split = ",".join(map(str, split_fractions(split)))
    if not os.path.isdir(data):
        raise SmallvisionError(f"{data}: no such data folder")
    out = out or os.path.join("ladders", os.path.basename(os.path.normpath(os.path.abspath(data))))
    if classifier is not None and classifier not in CLASSIFIERS:
        raise SmallvisionError(f"classifier must be one of {CLASSIFIERS}. Received: classifier={classifier!r}")
    record = _record(data, image_size, backbone, epochs_scale, batch_size, split, patience, classifier, refit)
    dev = distribute.resolve(devices)
    if not dev.writer:  # the first process writes the ladder; this one trains the same models in a private copy
        out, progress, report = dev.folder(out), False, False
    record = open_folder(out, record)
    the_plan = plan(chosen, parse_seeds(seeds, chosen), epochs_scale, backbone, views, classifier,
                    runs_folder=os.path.join(out, "runs"))
    entries = the_plan.entries
    record = record.with_(runs=record.runs + tuple(e.name for e in entries if e.name not in record.runs))
    write_json_atomic(os.path.join(out, "ladder.json"), record.to_json())

    t0 = time.perf_counter()
    _fill_caches(out, the_plan, record, progress)
    for i, entry in enumerate(entries):
        path = os.path.join(out, "runs", entry.name)
        run = Run(path)
        header = f"ladder {i + 1}/{len(entries)}: {entry.strategy}, seed {entry.seed}"
        if run.status.is_finished:
            if progress:
                log(f"{header}: finished earlier, kept ({runner.describe(run)})")
            continue
        if progress:
            log(f"{header}: {entry.epochs} epochs; ladder {_eta(out, entries[i:], the_plan)}")
        if os.path.isfile(run.file("config.json")):
            run = runner.resume(path, verbose=verbose, progress=progress, data=record.data, devices=dev)
        else:
            if os.path.isdir(path):  # killed before its config was written: nothing to keep
                shutil.rmtree(path)
            os.makedirs(os.path.join(out, "runs"), exist_ok=True)
            run = runner.train(record.data, the_plan.spec(entry, record).with_(mixed_precision=mixed_precision),
                               verbose=verbose, progress=progress, run_dir=path, devices=dev)
        if progress:
            log(runner.describe(run))
    if progress:
        log(f"ladder done in {duration(time.perf_counter() - t0)} (this session)")
    if report:
        from .report import write_report
        write_report(out)
    return out


def _fill_caches(out, the_plan, record, progress):
    """Before the first run: one frozen pass per seed for what the pretrained strategies will read
    (the features, the views, fine-tuning's maps), for each run still to do of a strategy that
    fills caches ahead (finetune). Run by run, features-augment would compute the views once and
    finetune its maps in a second pass over the same views."""
    by_seed = {}
    for e in the_plan.entries:
        strat = strategies_module.get(e.strategy)
        if strat.fills_caches and not Run(os.path.join(out, "runs", e.name)).status.is_finished:
            by_seed.setdefault(e.seed, (e, strat.cache_options(e.options, the_plan)))
    for seed, (e, options) in sorted(by_seed.items()):
        if progress:
            log(f"ladder: one frozen pass for the pretrained strategies' caches (seed {seed}'s split)")
        spec = TrainSpec.parse(e.strategy, image_size=tuple(record.image_size), seed=seed, split=record.split,
                               refit=record.refit, options=options)
        runner.fill_caches(record.data, spec, progress)
