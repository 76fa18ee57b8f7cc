"""Training orchestration: ``train`` (check everything, make a run folder, fit, evaluate,
publish) and ``resume`` (continue a run from its last committed epoch); a :class:`Learner`
holds the run, its spec and its strategy and goes through the strategy's stages.

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

from . import distribute, mixed, strategies
from .checks import check_positive
from .config import RunConfig, RunState, versions
from .data import prepare
from .data.decode import DecodeSpec
from .errors import SmallvisionError
from .progress import log
from .runs import Run
from .strategies import TrainSpec

RUN_CHECK_IMAGES = 32  # validation images a finished run's model.onnx is checked on against model.keras

def _now():
    return datetime.datetime.now().isoformat(timespec="seconds")


def train(data, spec=None, *, out="runs", run_dir=None, verbose="auto", progress=True, devices=None, **settings):
    """Train on the image folder ``data`` and write a run folder under ``out``.

    Args:
        data: folder with one sub-folder per class, or train/ validation/ test/ holding them.
        spec: a :class:`~smallvision.strategies.TrainSpec`, or a strategy name ("scratch",
            "augment", "features", "features-augment", "finetune", "nopool"); None: "scratch".
        settings: :meth:`TrainSpec.parse <smallvision.strategies.TrainSpec.parse>`'s keywords
            (they change a given spec): ``epochs`` (default: the strategy's — scratch 30, augment
            100, features 20, features-augment 50, finetune 30: its fine-tuning stage),
            ``batch_size``, ``image_size`` (``(height, width)``, one int, or "H,W"; default
            180x180, or the backbone's native size), ``crop_to_aspect`` (crop the centre to the
            target aspect instead of squashing), ``seed`` (seeds the split, shuffling,
            augmentation and weight initialisation), ``learning_rate`` (default: the
            strategy's: RMSprop 1e-3; the linear classifier's Adam 1e-2; finetune's fine-tuning
            stage 1e-5), ``patience`` (stop after this many epochs without a better val_loss;
            None: never), ``class_weight`` (None or "balanced"), ``split`` (train,validation,test
            fractions when ``data`` has no split folders), ``refit`` (after the epoch is chosen
            on validation, train the final model ``model.keras`` on train + validation for that
            many epochs; ``selection.keras`` keeps the model the choice was made with),
            ``mixed_precision`` ("auto": bfloat16 or float16 on a GPU, off on a CPU; "off",
            "float16", "bfloat16": :mod:`smallvision.mixed`; config.json records what it
            resolved to, and model.keras is float32 either way), and the
            strategy's options: ``backbone``, ``head`` ("flatten" or "gap"), ``classifier``
            ("chapter": Dense 256, Dropout 0.5, output; or "linear": the output layer with L2),
            ``weights`` ("imagenet" or a weights file) for the pretrained strategies; ``views``
            (augmented views cached per training image, default 10, or "exact") for
            features-augment and finetune; ``start`` (a features-augment run folder or its
            model.keras to fine-tune) or ``head_epochs`` (head training first, default 50) for
            finetune.
        out: parent folder of the run folders.
        run_dir: the run folder itself (instead of a new timestamped one under ``out``).
        verbose: Keras' fit verbosity.
        progress: print scan/decode progress and per-epoch lines (stderr).
        devices: None or 1 (one device), N or "all": data-parallel training on the backend's
            engine (JAX ``DataParallel``, TensorFlow ``MirroredStrategy``; see
            :mod:`smallvision.distribute`), the batch size being the global batch; or a resolved
            :class:`~smallvision.distribute.Devices`.

    Every setting and option is checked — the strategy's too (a weights file, a start run) — and
    the model is built before a run folder exists or an image is decoded.

    Returns:
        The finished :class:`~smallvision.runs.Run`.
    """
    from .data.dataset import balanced_class_weight
    from .data.scan import find_files

    if isinstance(spec, str):
        spec, settings = None, dict(settings, strategy=spec)
    spec = TrainSpec.parse(**settings) if spec is None else spec.with_(**settings) if settings else spec
    strat = strategies.get(spec.strategy)
    dev = devices if isinstance(devices, distribute.Devices) else distribute.resolve(devices)
    if not dev.writer:  # another process writes the run: this one trains the same model quietly, in private
        run_dir, progress, verbose = dev.folder(run_dir), False, 0
    class_names = find_files(os.fspath(data))[0]
    try:
        strat.validate(spec.options, class_names)
    except SmallvisionError:
        raise
    except ValueError as e:
        raise SmallvisionError(f"strategy {strat.name}: {e}") from None
    decoding = DecodeSpec(*spec.image_size, spec.crop_to_aspect)
    num_classes = len(class_names)
    mode = mixed.resolve(spec.mixed_precision)
    with training_scope(dev, mode):
        model = build(spec, num_classes)  # bad options fail before decoding
    t0 = time.perf_counter()
    prep = prepare(data, decoding, spec.split, spec.seed, progress=progress)
    weights_by_class = balanced_class_weight(prep.labels["train"], num_classes) if spec.class_weight else None
    counts = np.bincount(prep.labels["train"], minlength=num_classes)
    if weights_by_class is None and counts.max() > 1.5 * max(counts.min(), 1) and progress:
        log(f"note: train classes are imbalanced ({dict(zip(prep.class_names, counts.tolist()))}); "
             "consider --class-weight balanced")

    run = Run.create_at(run_dir) if run_dir else Run.create(out, spec.strategy)
    config = RunConfig(
        strategy=spec.strategy, data=os.path.abspath(data), image_size=spec.image_size,
        crop_to_aspect=spec.crop_to_aspect, decode=decoding.key, epochs=spec.epochs, batch_size=spec.batch_size,
        learning_rate=spec.learning_rate, seed=spec.seed, patience=spec.patience, class_weight=spec.class_weight,
        class_weights=weights_by_class, split=spec.split, split_origin=prep.splits.origin,
        class_names=tuple(prep.class_names),
        counts={name: np.bincount(prep.labels[name], minlength=num_classes).tolist() for name, _ in prep.splits.items()},
        data_index_sha256=prep.index.digest(), rejected=len(prep.index.rejects),
        duplicates=len(prep.splits.duplicates), options=spec.options.to_json(), refit=spec.refit,
        devices=dev.to_json(), mixed_precision=mode, optimizer=_optimizer_name(model), versions=versions())
    run.write_config(config)
    run.write_data_files(prep.index, prep.splits)
    run.set_status(status="running", started=_now())
    if progress:
        log(f"run folder: {run.path}" + (f"; training on {dev.describe()}" if dev.count > 1 else "")
            + (f"; mixed precision: {mixed.policy(mode)}" if mode != "off" else ""))
        if spec.batch_size % dev.count:
            log(f"note: batch size {spec.batch_size} is not a multiple of {dev.count} devices: every batch is padded "
                f"to {dev.padded(spec.batch_size)} (the padding weighs 0)")
    return Learner(run, config, prep, dev, verbose, progress).train(model, None, t0)


def fill_caches(data, spec, progress=True):
    """Fill the caches a run of ``spec`` (a :class:`TrainSpec`) on ``data`` will read (no run
    folder): see ``Strategy.fill_caches``; with ``spec.refit``, what its final model reads too
    (the validation images as training images)."""
    from .data import with_validation_in_train
    prep = prepare(data, DecodeSpec(*spec.image_size, spec.crop_to_aspect), spec.split, spec.seed, progress=progress)
    strategies.get(spec.strategy).fill_caches(with_validation_in_train(prep) if spec.refit else prep, spec.options,
                                              progress, spec.seed)


def resume(run_path, epochs=None, verbose="auto", progress=True, data=None, devices=None):
    """Continue an interrupted (or finished, with more ``epochs``) run from its last checkpoint.

    ``data`` points at the data folder when it has moved since the run started; its content
    must be the same (the data-index hash is checked). ``devices``: as in :func:`train`;
    None keeps the run's own (config.json), and the global batch stays the run's.
    """
    from .fitting import load_checkpoint

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
    learner = Learner(run, config, prep, dev, verbose, progress)
    if state is not None and state.epochs_done:
        if progress:
            log(f"resuming {run.path} after epoch {state.epochs_done} of {config.epochs}")
        import keras
        keras.utils.set_random_seed(config.seed + state.epochs_done)
        with training_scope(dev, config.mixed_precision):
            model = load_checkpoint(run.file("checkpoint", state.last))
        if state.stopped_early and epochs is not None:
            state = state.with_(stopped_early=False, wait=0)
    else:  # killed before the first epoch was committed: start again, same seed
        if progress:
            log(f"resuming {run.path}: no epoch was committed; starting from epoch 1")
        state = None
        with training_scope(dev, config.mixed_precision):
            model = build(learner.spec, len(prep.class_names))
    run.set_status(status="running", resumed=_now())
    return learner.train(model, state, t0)


def build(spec, num_classes, options=None):
    """Seed every generator with ``spec.seed`` (Python, NumPy, the backend), then build the
    strategy's compiled model (``options``: other than the spec's, e.g. a refit's); a strategy's
    ``ValueError`` becomes a one-line error."""
    import keras

    strat = strategies.get(spec.strategy)
    keras.utils.set_random_seed(spec.seed)
    try:
        return strat.build(tuple(spec.image_size), num_classes, spec.seed, spec.learning_rate,
                           spec.options if options is None else options)
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


def stage_at(stages, state, epoch):
    """The name of the stage that trained ``epoch`` (1-based), by where each began (``state.stages``)."""
    name = stages[0].name
    for stage in stages:
        first = state.stages.get(stage.name)
        if first is not None and first <= epoch:
            name = stage.name
    return name


class Learner:
    """One run being trained: its folder, spec, strategy and stages, the prepared data and the
    devices; fits through the stages, evaluates and publishes, and refits (fastai's Learner)."""

    def __init__(self, run, config, prep, dev=distribute.ONE, verbose="auto", progress=True):
        self.run, self.config, self.prep, self.dev = run, config, prep, dev
        self.verbose, self.progress = verbose, progress
        self.spec = TrainSpec.from_config(config)
        self.strategy = strategies.get(config.strategy)
        self.stages = self.strategy.stages(self.spec, len(prep.class_names))

    def train(self, model, state, t0):
        """Train through the stages on the devices from the committed ``state`` (None: the start),
        then evaluate and publish on one device (and, with ``refit``, train and publish the final
        model); ``t0``: when this process began on the run (wall time adds up across resumes)."""
        from .fitting import finish
        from .plots import plot_curves

        run, config, prep = self.run, self.config, self.prep
        before = run.status.wall_seconds
        with _recorded_failures(run, before, t0):
            model, state, inputs = self.fit(run, model, prep, self.stages, state or RunState())
        if not state.best:
            raise SmallvisionError(f"{run.path}: no epoch finished; nothing to evaluate")
        sets = {name: (inputs[name], prep.labels[name], prep.paths(name)) for name in ("validation", "test")}
        stage = stage_at(self.stages, state, state.best_epoch)
        finish(run, state, sets, prep.class_names, self._eval_batch(inputs),
               image_model=lambda m: self.strategy.image_model(m, self.spec, stage),
               model_file="selection.keras" if config.refit else "model.keras")
        plot_curves(run.read_history(), run.file("curves.png"), stages=state.stages,
                    title=f"{config.strategy} on {os.path.basename(os.path.normpath(config.data))}")
        if config.refit:
            with _recorded_failures(run, before, t0):
                self.refit(state)
        try:
            self.novelty()
        except Exception as e:  # an extra: the run is finished and usable without it (predict omits the fields)
            log(f"warning: {run.path}: no novelty.npz ({type(e).__name__}: {str(e)[:200]}); predict will not say "
                "which images look unlike the training images")
        try:
            self.deployable()
        except Exception as e:  # also an extra: predict and serve then use model.keras (and try again)
            log(f"warning: {run.path}: no model.onnx ({str(e)[:300]}); predict and serve will use model.keras")
        run.set_status(status="finished", finished=_now(), best_epoch=state.best_epoch,
                       epochs_done=state.epochs_done, wall_seconds=_wall(before, t0))
        return run

    def deployable(self):
        """``model.onnx`` + ``labels.json`` beside the published model.keras (:mod:`smallvision.deploy`),
        checked on :data:`RUN_CHECK_IMAGES` validation images (a conversion error is structural:
        a few images show it; ``smallvision export`` checks more). ``SMALLVISION_RUN_ONNX=0`` skips
        it (a sweep of many runs; the test suite): then the first predict or serve writes it."""
        import importlib.util

        from . import deploy
        from .inference import open_model
        from .runs import resolve_model
        if importlib.util.find_spec("onnxruntime") is None or os.environ.get("SMALLVISION_RUN_ONNX", "1") == "0":
            return
        where = resolve_model(self.run.path)
        if deploy.current(self.run.path, where.model_path) is None:
            deploy.write(where, open_model(self.run.path), RUN_CHECK_IMAGES)

    def fit(self, run, model, prep, stages, state, validate=True):
        """Fit ``model`` through ``stages`` from the committed ``state`` into ``run`` on the devices
        (the frozen passes that make a stage's inputs run outside their scope, on one); without
        ``validate`` (a refit) nothing is validated and patience does not apply. Returns (model,
        state, the last stage's inputs)."""
        from .data.dataset import ImageBatches
        from .fitting import fit
        spec, dev = self.spec, self.dev
        n = len(prep.class_names)
        inputs = None
        for k, stage in enumerate(stages):
            if k < state.stage:
                continue
            inputs = stage.inputs(prep, self.progress, spec.seed) if stage.inputs else \
                self.strategy.inputs(prep, spec.options, self.progress, seed=spec.seed)
            train_ds = ImageBatches(inputs["train"], prep.labels["train"], n, spec.batch_size, shuffle=True,
                                    seed=spec.seed, class_weight=self.config.class_weights, devices=dev)
            val_ds = ImageBatches(inputs["validation"], prep.labels["validation"], n, self._eval_batch(inputs, dev),
                                  devices=dev) if validate else None
            with training_scope(dev, self.config.mixed_precision):
                model, state = _enter_stage(model, stages, k, state, self.progress)
                dev.prepare(model)
                start = state.stage_start
                schedule = (lambda epoch, s=stage, start=start: s.schedule(epoch - start, s.epochs)) \
                    if stage.schedule else None
                state = fit(model, run, train_ds, val_ds, start + stage.epochs, state,
                            spec.patience if validate else None, verbose=self.verbose,
                            log=log if self.progress and self.verbose == 0 else None, schedule=schedule)
        return model, state, inputs

    def refit(self, state):
        """Train the final model on train + validation, ``state.best_epoch`` epochs through the same
        stages, from the same seed, in ``<run>/refit/`` (committed per epoch, so it resumes like a
        run); publish it as model.keras and its test figures in metrics.json beside the
        selection's."""
        from ._io import read_json, write_json_atomic
        from .data import with_validation_in_train
        from .fitting import load_checkpoint, publish_refit
        from .mixed import as_float32

        run, prep, spec, dev = self.run, self.prep, self.spec, self.dev
        final_stages = refit_stages(self.stages, state)
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
        if self.progress:
            what = f"resuming after epoch {rstate.epochs_done}" if rstate and rstate.epochs_done else "from the start"
            log(f"refit: the final model on train + validation ({len(merged.labels['train'])} images), "
                f"{plan['epochs']} epochs (the chosen epoch), {what}")
        if rstate is not None and rstate.epochs_done:
            import keras
            keras.utils.set_random_seed(spec.seed + rstate.epochs_done)
            with training_scope(dev, self.config.mixed_precision):
                model = load_checkpoint(ref.file("checkpoint", rstate.last))
        else:
            rstate = RunState()
            with training_scope(dev, self.config.mixed_precision):
                model = build(spec, len(prep.class_names), self.strategy.refit_options(spec.options))
        model, rstate, inputs = self.fit(ref, model, merged, final_stages, rstate, validate=False)
        final = as_float32(load_checkpoint(ref.file("checkpoint", rstate.last)))  # published in float32
        publish_refit(run, final, self.strategy.image_model(final, self.spec, final_stages[-1].name),
                      (inputs["test"], prep.labels["test"], prep.paths("test")), prep.class_names,
                      self._eval_batch(inputs),
                      {"epochs": plan["epochs"], "stages": dict(plan["stages"]) if len(self.stages) > 1 else None,
                       "trained_on": ["train", "validation"], "images": len(merged.labels["train"])})

    def novelty(self):
        """``novelty.npz`` for the published model.keras (:mod:`smallvision.novelty`): from the
        features cache when the strategy's base is frozen, else through the network."""
        from . import novelty
        from .runs import load_model
        from .strategies.features import cached_features
        o = self.strategy.pooled_features(self.spec.options)
        pooled = cached_features(self.prep, o, self.progress) if o is not None else None
        model = load_model(self.run.file("model.keras")) if pooled is None else None
        novelty.fit(self.run.path, model, self.strategy.backbone(self.spec.options), self.prep.images["train"],
                    self.prep.images["validation"], pooled, self.spec.seed)

    def _eval_batch(self, inputs, dev=distribute.ONE):
        """Evaluation batch size: large on cached feature vectors (the result does not depend on it:
        nothing in evaluation mode mixes the images of a batch), the training one on images; on
        several devices a multiple of their count (then only the last batch is padded)."""
        from .data.dataset import is_cheap
        size = max(self.spec.batch_size, 500) if is_cheap(inputs["validation"]) else self.spec.batch_size
        return dev.padded(size)


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


@contextlib.contextmanager
def training_scope(dev, mode):
    """Where a run's models are built, loaded and trained: on its devices (``dev.scope()``), in
    its mixed-precision mode (a resolved :mod:`smallvision.mixed` mode)."""
    with dev.scope(), mixed.scope(mode):
        yield


def _optimizer_name(model):
    """config.json's ``optimizer``: the one that steps (a float16 run's LossScaleOptimizer wraps it)."""
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    return type(optimizer).__name__.lower()


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


def _wall(before, t0):
    """Seconds spent on a run so far: earlier processes' share plus this one's (a process
    killed with -9 never says how long it ran, so its share is missing)."""
    return round(before + time.perf_counter() - t0, 1)


def describe(run):
    """One line on a finished run: best epoch and validation/test accuracy (with a refit: the
    selection model's, then the final model's test accuracy)."""
    m = run.metrics
    parts = [f"{run.path}: best epoch {m.best_epoch} of {m.epochs_done}"]
    chosen = m.chosen
    for name, e in (("validation", chosen.validation), ("test", chosen.test)):
        if e is not None:
            parts.append(f"{name} accuracy {e.accuracy:.4f} (loss {e.loss:.4f}, n={e.n})")
    if m.refit is not None and m.test is not None:
        parts.append(f"refit on train + validation: test accuracy {m.test.accuracy:.4f} (loss {m.test.loss:.4f})")
    return "; ".join(parts)
