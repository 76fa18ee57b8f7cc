"""Training orchestration: ``train`` (check everything, make a run folder, fit, evaluate,
publish) and ``resume`` (continue a run from its last committed epoch), through the
strategy's stages.

The order of ``train`` is the promise a user relies on: every argument and option is
checked — the strategy's too (a weights file, a start run) — and the model is built
*before* a run folder exists or an image is decoded, so a mistake costs seconds and leaves
nothing behind. From then on every epoch is committed (``train.py``), so an interrupted or
killed run resumes where it was.
"""
import contextlib
import datetime
import os
import shutil
import time

import numpy as np

from . import distribute, strategies
from .checks import DEFAULT_SPLIT, check_choice, check_positive, check_seed, image_size as parse_image_size, \
    split_fractions
from .config import RunConfig, RunState, versions
from .data import prepare
from .data.decode import DecodeSpec
from .errors import SmallvisionError
from .progress import log
from .runs import Run


def _now():
    return datetime.datetime.now().isoformat(timespec="seconds")


def train(data, strategy="scratch", out="runs", epochs=None, batch_size=32, image_size=None,
          crop_to_aspect=False, seed=0, learning_rate=None, patience=None, class_weight=None,
          split=DEFAULT_SPLIT, verbose="auto", progress=True, backbone=None, head=None, weights=None,
          start=None, head_epochs=None, views=None, classifier=None, refit=False, run_dir=None, devices=None):
    """Train ``strategy`` on the image folder ``data`` and write a run folder under ``out``.

    Args:
        data: folder with one sub-folder per class, or train/ validation/ test/ holding them.
        strategy: a registered strategy name ("scratch", "augment", "features",
            "features-augment", "finetune", "nopool").
        out: parent folder of the run folders.
        epochs: default: the strategy's (scratch 30, augment 100, features 20, features-augment 50,
            finetune 30: its fine-tuning stage).
        batch_size: images per batch.
        image_size: ``(height, width)``, one int, or "H,W"; default: 180x180, or the backbone's
            native size.
        crop_to_aspect: crop the centre to the target aspect instead of squashing.
        seed: seeds the split, shuffling, augmentation and weight initialisation (the global
            Python, NumPy and backend generators are seeded with it when the model is built).
        learning_rate: default: the strategy's (RMSprop 1e-3; the linear classifier's Adam 1e-2;
            finetune's fine-tuning stage 1e-5).
        patience: stop after this many epochs without a better val_loss (None: never).
        class_weight: None or "balanced" (weights inversely proportional to class frequency).
        split: train,validation,test fractions when ``data`` has no split folders.
        verbose: Keras' fit verbosity.
        progress: print scan/decode progress and per-epoch lines (stderr).
        backbone, head, weights: for pretrained strategies: a name from ``smallvision backbones``,
            "flatten" or "gap", and "imagenet" / None / a weights file.
        start, head_epochs: for finetune: a features-augment run (folder or model.keras) to
            fine-tune, or else how many epochs to train the head first (default 50).
        views: for features-augment: augmented views cached per training image (default 10), or
            "exact" (a fresh view every epoch).
        classifier: for pretrained strategies: "chapter" (Dense 256, Dropout 0.5, output; the
            default) or "linear" (the output layer alone, L2 on its kernel).
        refit: after the epoch is chosen on validation, train the final model (``model.keras``)
            on train + validation for that many epochs, from the same seed; ``selection.keras``
            keeps the model the choice was made with, ``metrics.json`` both models' figures.
        run_dir: the run folder itself (instead of a new timestamped one under ``out``).
        devices: None or 1 (one device), N or "all": data-parallel training on the backend's
            engine (JAX ``DataParallel``, TensorFlow ``MirroredStrategy``; see
            :mod:`smallvision.distribute`), ``batch_size`` being the global batch; or a resolved
            :class:`~smallvision.distribute.Devices`.

    Returns:
        The finished :class:`~smallvision.runs.Run`.
    """
    from .data.dataset import balanced_class_weight
    from .data.scan import find_files

    strat = strategies.get(strategy)
    dev = devices if isinstance(devices, distribute.Devices) else distribute.resolve(devices)
    if not dev.writer:  # another process writes the run: this one trains the same model quietly, in private
        run_dir, progress, verbose = dev.folder(run_dir), False, 0
    epochs = check_positive("epochs", strat.default_epochs if epochs is None else epochs, integer=True)
    batch_size = check_positive("batch_size", batch_size, integer=True)
    patience = check_positive("patience", patience, integer=True, allow_none=True)
    seed = check_seed(seed)
    class_weight = None if class_weight == "none" else check_choice("class_weight", class_weight, (None, "balanced"))
    fractions = split_fractions(split)
    if head_epochs is not None:
        head_epochs = check_positive("head_epochs", head_epochs, integer=True)
    options = {k: v for k, v in (("backbone", backbone), ("head", head), ("weights", weights), ("start", start),
                                 ("head_epochs", head_epochs), ("views", views), ("classifier", classifier))
               if v is not None}
    strat.check_options(options)
    class_names = find_files(os.fspath(data))[0]
    try:
        strat.validate(options, class_names)
        options = strat.resolve_options(options)
        size = parse_image_size(strat.default_image_size(options) if image_size is None else image_size)
        learning_rate = float(check_positive("learning_rate", strat.learning_rate(options) if learning_rate is None
                                             else learning_rate))
    except SmallvisionError:
        raise
    except ValueError as e:
        raise SmallvisionError(f"strategy {strat.name}: {e}") from None
    for key in ("start", "weights"):  # files, checked above: recorded absolute so that a resume finds them
        if options.get(key) not in (None, "imagenet"):
            options[key] = os.path.abspath(options[key])
    spec = DecodeSpec(*size, bool(crop_to_aspect))
    num_classes = len(class_names)
    with dev.scope():
        model = build(strat, spec, num_classes, seed, learning_rate, options)  # bad options fail before decoding
    t0 = time.perf_counter()
    prep = prepare(data, spec, fractions, seed, progress=progress)
    weights_by_class = balanced_class_weight(prep.labels["train"], num_classes) if class_weight else None
    counts = np.bincount(prep.labels["train"], minlength=num_classes)
    if weights_by_class is None and counts.max() > 1.5 * max(counts.min(), 1) and progress:
        log(f"note: train classes are imbalanced ({dict(zip(prep.class_names, counts.tolist()))}); "
             "consider --class-weight balanced")

    run = Run.create_at(run_dir) if run_dir else Run.create(out, strategy)
    config = RunConfig(
        strategy=strategy, data=os.path.abspath(data), image_size=size, crop_to_aspect=spec.crop_to_aspect,
        decode=spec.key, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
        patience=patience, class_weight=class_weight, class_weights=weights_by_class, split=fractions,
        split_origin=prep.splits.origin, class_names=tuple(prep.class_names),
        counts={name: np.bincount(prep.labels[name], minlength=num_classes).tolist() for name, _ in prep.splits.items()},
        data_index_sha256=prep.index.digest(), rejected=len(prep.index.rejects),
        duplicates=len(prep.splits.duplicates), options=options, refit=bool(refit), devices=dev.to_json(),
        optimizer=type(model.optimizer).__name__.lower(), versions=versions())
    run.write_config(config)
    run.write_data_files(prep.index, prep.splits)
    run.set_status(status="running", started=_now())
    if progress:
        log(f"run folder: {run.path}" + (f"; training on {dev.describe()}" if dev.count > 1 else ""))
        if batch_size % dev.count:
            log(f"note: batch size {batch_size} is not a multiple of {dev.count} devices: every batch is padded to "
                f"{dev.padded(batch_size)} (the padding weighs 0)")
    return _train_stages(run, model, prep, config, None, verbose, progress, t0, dev)


def fill_caches(data, strategy, options, image_size, split=DEFAULT_SPLIT, seed=0, progress=True, refit=False):
    """Fill the caches a ``strategy`` run on ``data`` will read (no run folder): see
    ``Strategy.fill_caches``; with ``refit``, what its final model reads too (the validation
    images as training images)."""
    from .data import with_validation_in_train
    fractions = split_fractions(split)
    prep = prepare(data, DecodeSpec(*parse_image_size(image_size)), fractions, seed, progress=progress)
    strategies.get(strategy).fill_caches(with_validation_in_train(prep) if refit else prep, options, progress, seed)


def resume(run_path, epochs=None, verbose="auto", progress=True, data=None, devices=None):
    """Continue an interrupted (or finished, with more ``epochs``) run from its last checkpoint.

    ``data`` points at the data folder when it has moved since the run started; its content
    must be the same (the data-index hash is checked). ``devices``: as in :func:`train`;
    None keeps the run's own (config.json), and the global batch stays the run's.
    """
    from .runs import load_model

    t0 = time.perf_counter()
    run = Run.open(run_path)
    config = run.config
    dev = devices if isinstance(devices, distribute.Devices) else distribute.resolve(devices, config.devices)
    if not dev.writer:  # another process writes the run: this one resumes a private copy, quietly
        run, progress, verbose = Run.open(dev.folder(run.path)), False, 0
    config = config.with_(devices=dev.to_json())
    if epochs is not None:
        config = config.with_(epochs=check_positive("epochs", epochs, integer=True))
    if data is not None:
        config = config.with_(data=os.path.abspath(data))
    state = run.state
    prep = prepare(config.data, DecodeSpec(*config.image_size, config.crop_to_aspect), config.split, config.seed,
                   progress=progress)
    if prep.index.digest() != config.data_index_sha256:
        raise SmallvisionError(f"{config.data}: the data changed since run {run.path} started "
                               f"(index sha256 {prep.index.digest()[:12]} != {config.data_index_sha256[:12]}); "
                               "start a new run instead")
    run.write_config(config)
    if state is not None and state.epochs_done:
        if progress:
            log(f"resuming {run.path} after epoch {state.epochs_done} of {config.epochs}")
        import keras
        keras.utils.set_random_seed(config.seed + state.epochs_done)
        with dev.scope():
            model = load_model(run.file("checkpoint", state.last))
        if state.stopped_early and epochs is not None:
            state = state.with_(stopped_early=False, wait=0)
    else:  # killed before the first epoch was committed: start again, same seed
        if progress:
            log(f"resuming {run.path}: no epoch was committed; starting from epoch 1")
        state = None
        with dev.scope():
            model = build(strategies.get(config.strategy), prep.spec, len(prep.class_names), config.seed,
                          config.learning_rate, config.options)
    run.set_status(status="running", resumed=_now())
    return _train_stages(run, model, prep, config, state, verbose, progress, t0, dev)


def build(strat, spec, num_classes, seed, learning_rate, options=None):
    """Seed every generator with ``seed`` (Python, NumPy, the backend), then build the strategy's
    compiled model; a strategy's ``ValueError`` becomes a one-line error."""
    import keras

    keras.utils.set_random_seed(seed)
    try:
        return strat.build((spec.height, spec.width), num_classes, seed, learning_rate, options or {})
    except SmallvisionError:
        raise
    except ValueError as e:
        raise SmallvisionError(f"strategy {strat.name}: {e}") from None


def _enter_stage(model, stages, k, state, progress):
    """Begin stage ``k`` (unless the committed state is already in it): run its ``enter``, and
    record where it starts. Returns ``(model, state)``."""
    name, epochs, enter = stages[k][:3]
    if state.stage >= k:  # resumed inside this stage: the checkpoint already holds its model
        return model, state
    if enter is not None:
        model = enter(model)
    start = 0 if k == 0 else state.epochs_done
    state = state.with_(stage=k, stage_start=start, stages=dict(state.stages, **{name: start + 1}))
    if k:  # early stopping and patience count per stage
        state = state.with_(stopped_early=False, wait=0)
    if progress and len(stages) > 1:
        log(f"stage {k + 1} of {len(stages)}: {name}, epochs {start + 1}-{start + epochs}")
    return model, state


def _train_stages(run, model, prep, config, state, verbose, progress, t0, dev=distribute.ONE):
    """Train through the strategy's stages on ``dev``, then evaluate and publish on one device
    (and, with ``refit``, train and publish the final model); ``t0``: when this process began on
    the run (wall time adds up across resumes in run.json)."""
    from . import train as train_mod
    from .plots import plot_curves

    before = run.status.get("wall_seconds", 0)
    strat = strategies.get(config.strategy)
    stages = strat.stages(config)
    with _recorded_failures(run, before, t0):
        model, state, inputs = _fit_stages(run, model, prep, config, stages, state or RunState(), verbose, progress,
                                           dev)
    if not state.best:
        raise SmallvisionError(f"{run.path}: no epoch finished; nothing to evaluate")
    sets = {name: (inputs[name], prep.labels[name], prep.paths(name)) for name in ("validation", "test")}
    train_mod.finish(run, state, sets, prep.class_names, _eval_batch(inputs, config),
                     export=lambda m: strat.export(m, config.image_size, config.options),
                     model_file="selection.keras" if config.refit else "model.keras")
    plot_curves(run.read_history(), run.file("curves.png"), stages=state.stages,
                title=f"{config.strategy} on {os.path.basename(os.path.normpath(config.data))}")
    if config.refit:
        with _recorded_failures(run, before, t0):
            _refit(run, prep, config, strat, stages, state, verbose, progress, dev)
    run.set_status(status="finished", finished=_now(), best_epoch=state.best_epoch,
                   epochs_done=state.epochs_done, wall_seconds=_wall(before, t0))
    return run


def _fit_stages(run, model, prep, config, stages, state, verbose, progress, dev, validate=True):
    """Fit ``model`` through ``stages`` from the committed ``state`` on the devices ``dev`` (the
    frozen passes that make a stage's inputs run outside their scope, on one); without
    ``validate`` (a refit) nothing is validated and patience does not apply. Returns (model,
    state, the last stage's inputs)."""
    from . import train as train_mod
    from .data.dataset import ImageBatches
    strat = strategies.get(config.strategy)
    n = len(prep.class_names)
    inputs = None
    for k, stage in enumerate(stages):
        if k < state.stage:
            continue
        inputs = stage.inputs(prep, progress, config.seed) if stage.inputs else \
            strat.inputs(prep, config.options, progress, seed=config.seed)
        train_ds = ImageBatches(inputs["train"], prep.labels["train"], n, config.batch_size, shuffle=True,
                                seed=config.seed, class_weight=config.class_weights, devices=dev)
        val_ds = ImageBatches(inputs["validation"], prep.labels["validation"], n, _eval_batch(inputs, config, dev),
                              devices=dev) if validate else None
        with dev.scope():
            model, state = _enter_stage(model, stages, k, state, progress)
            dev.prepare(model)
            start = state.stage_start
            schedule = (lambda epoch, s=stage, start=start: s.schedule(epoch - start, s.epochs)) \
                if stage.schedule else None
            state = train_mod.fit(model, run, train_ds, val_ds, start + stage.epochs, state,
                                  config.patience if validate else None, verbose=verbose,
                                  log=log if progress and verbose == 0 else None, schedule=schedule)
    return model, state, inputs


def refit_stages(stages, state):
    """The final model's stages: each as long as the selection ran it, up to the chosen epoch
    (``state.best_epoch``); a stage that began after it is dropped."""
    firsts = [state.stages.get(stage.name) for stage in stages]
    out = []
    for k, (stage, first) in enumerate(zip(stages, firsts)):
        if first is None or first > state.best_epoch:
            break
        last = firsts[k + 1] - 1 if k + 1 < len(firsts) and firsts[k + 1] is not None else state.epochs_done
        out.append(stage._replace(epochs=min(last, state.best_epoch) - first + 1))
    return out


def _refit(run, prep, config, strat, stages, state, verbose, progress, dev):
    """Train the final model on train + validation, ``state.best_epoch`` epochs through the same
    stages, from the same seed, in ``<run>/refit/`` (committed per epoch, so it resumes like a
    run); publish it as model.keras and its test figures in metrics.json beside the
    selection's."""
    from . import train as train_mod
    from ._io import read_json, write_json_atomic
    from .data import with_validation_in_train
    from .runs import load_model

    final_stages = refit_stages(stages, state)
    plan = {"epochs": state.best_epoch, "stages": [[s.name, s.epochs] for s in final_stages]}
    ref = Run(run.file("refit"))
    try:
        same = read_json(ref.file("plan.json")) == plan
    except (OSError, ValueError):
        same = False
    if not same:  # a first refit, or the selection changed (a resume with more epochs)
        shutil.rmtree(ref.path, ignore_errors=True)
        os.makedirs(ref.path)
        write_json_atomic(ref.file("plan.json"), plan)
    merged = with_validation_in_train(prep)
    rstate = ref.state
    if progress:
        what = f"resuming after epoch {rstate.epochs_done}" if rstate and rstate.epochs_done else "from the start"
        log(f"refit: the final model on train + validation ({len(merged.labels['train'])} images), "
            f"{plan['epochs']} epochs (the chosen epoch), {what}")
    if rstate is not None and rstate.epochs_done:
        import keras
        keras.utils.set_random_seed(config.seed + rstate.epochs_done)
        with dev.scope():
            model = load_model(ref.file("checkpoint", rstate.last))
    else:
        rstate = RunState()
        with dev.scope():
            model = build(strat, prep.spec, len(prep.class_names), config.seed, config.learning_rate,
                          strat.refit_options(config.options))
    model, rstate, inputs = _fit_stages(ref, model, merged, config, final_stages, rstate, verbose, progress, dev,
                                        validate=False)
    final = load_model(ref.file("checkpoint", rstate.last))
    train_mod.publish_refit(run, final, strat.export(final, config.image_size, config.options),
                            (inputs["test"], prep.labels["test"], prep.paths("test")), prep.class_names,
                            _eval_batch(inputs, config),
                            {"epochs": plan["epochs"], "stages": dict(plan["stages"]) if len(stages) > 1 else None,
                             "trained_on": ["train", "validation"], "images": len(merged.labels["train"])})


@contextlib.contextmanager
def _recorded_failures(run, before, t0):
    """Interruptions and failures while training: run.json says what happened, and the message
    says how to continue (the last committed epoch is intact)."""
    try:
        yield
    except KeyboardInterrupt:
        run.set_status(status="interrupted", interrupted=_now(), wall_seconds=_wall(before, t0))
        raise SmallvisionError(f"interrupted; continue with: smallvision train --resume {run.path}") from None
    except OSError as e:  # disk full, folder removed, ...
        try:
            run.set_status(status="failed", error=f"{type(e).__name__}: {e}")
        except OSError:
            pass
        where = e.filename if e.filename and not os.path.abspath(e.filename).startswith(os.path.abspath(run.path)) \
            else None
        if where:
            raise SmallvisionError(f"{where}: {e.strerror or e}; fix that and continue with: "
                                   f"smallvision train --resume {run.path}") from None
        raise SmallvisionError(f"{run.path}: cannot write the run folder ({e.strerror or e}); fix that and "
                               f"continue with: smallvision train --resume {run.path}") from None
    except Exception as e:
        run.set_status(status="failed", error=f"{type(e).__name__}: {e}")
        raise


def _eval_batch(inputs, config, dev=distribute.ONE):
    """Evaluation batch size: large on cached feature vectors (the result does not depend on it:
    nothing in evaluation mode mixes the images of a batch), the training one on images; on
    several devices a multiple of their count (then only the last batch is padded)."""
    from .data.dataset import is_cheap
    size = max(config.batch_size, 500) if is_cheap(inputs["validation"]) else config.batch_size
    return dev.padded(size)


def _wall(before, t0):
    """Seconds spent on a run so far: earlier processes' share plus this one's (a process
    killed with -9 never says how long it ran, so its share is missing)."""
    return round(before + time.perf_counter() - t0, 1)


def describe(run):
    """One line on a finished run: best epoch and validation/test accuracy (with a refit: the
    selection model's, then the final model's test accuracy)."""
    m = run.metrics
    parts = [f"{run.path}: best epoch {m['best_epoch']} of {m['epochs_done']}"]
    chosen = m.get("selection", m)
    for name in ("validation", "test"):
        if name in chosen:
            parts.append(f"{name} accuracy {chosen[name]['accuracy']:.4f} (loss {chosen[name]['loss']:.4f}, "
                         f"n={chosen[name]['n']})")
    if "refit" in m and "test" in m:
        parts.append(f"refit on train + validation: test accuracy {m['test']['accuracy']:.4f} "
                     f"(loss {m['test']['loss']:.4f})")
    return "; ".join(parts)
