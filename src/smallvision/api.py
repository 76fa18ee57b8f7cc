"""The Python API: the same verbs as the command line (``cli.py`` only parses and calls these).

    import smallvision.api as sv
    run = sv.train("data/cats_vs_dogs_small", strategy="augment", epochs=100)
    print(run.metrics["test"]["accuracy"])
    sv.predict(run.path, ["new_photos/"])
"""
import datetime
import glob
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import __version__
from .data import prepare
from .data.decode import BadImage, DecodeSpec, read_image
from .data.scan import scan as _scan
from .data.split import parse_fractions
from .errors import SmallvisionError
from .runs import Run

DEFAULT_IMAGE_SIZE = (180, 180)


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def versions():
    """Package and backend versions, recorded in every run's config."""
    import cv2
    import keras
    import PIL

    backend = keras.backend.backend()
    try:
        backend_version = __import__({"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}
                                     .get(backend, backend)).__version__
    except Exception:
        backend_version = "unknown"
    return {"smallvision": __version__, "python": platform.python_version(), "platform": platform.platform(),
            "keras": keras.__version__, "backend": backend, "backend_version": backend_version,
            "numpy": np.__version__, "pillow": PIL.__version__, "opencv": cv2.__version__}


def _spec(image_size, crop_to_aspect):
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    try:
        h, w = (int(v) for v in image_size)
        return DecodeSpec(h, w, bool(crop_to_aspect))
    except (TypeError, ValueError) as e:
        raise SmallvisionError(f"image size must be HEIGHT,WIDTH or one number of pixels >= 8. "
                               f"Received: {image_size!r} ({e})") from None


def scan(data, image_size=None, crop_to_aspect=False, split=(0.7, 0.15, 0.15), seed=0, progress=True):
    """Scan and check a data folder; with ``image_size``, also fill the decode cache.

    Returns ``(index, splits)``.
    """
    from .data.split import make_splits

    spec = _spec(image_size, crop_to_aspect) if image_size else None
    index = _scan(data, spec, progress=progress)
    splits = make_splits(index, parse_fractions(split), seed)
    return index, splits


def strategies():
    """{name: one-line summary} of the training strategies."""
    from .strategies import STRATEGIES
    return {name: m.SUMMARY for name, m in STRATEGIES.items()}


def train(data, strategy="scratch", out="runs", epochs=None, batch_size=32, image_size=None,
          crop_to_aspect=False, seed=0, learning_rate=None, patience=None, class_weight=None,
          split=(0.7, 0.15, 0.15), verbose="auto", progress=True, backbone=None, head=None, weights=None,
          start=None, head_epochs=None, run_dir=None):
    """Train ``strategy`` on the image folder ``data`` and write a run folder under ``out``.

    Args:
        data: folder with one sub-folder per class, or train/ validation/ test/ holding them.
        strategy: a name from :func:`strategies` ("scratch", "augment", "features", "features-augment",
            "finetune", "nopool").
        out: parent folder of the run folders.
        epochs: default: the strategy's (scratch 30, augment 100, features 20, features-augment 50,
            finetune 30: its fine-tuning stage).
        batch_size: images per batch.
        image_size: ``(height, width)`` or one int; default: 180x180, or the backbone's native size.
        crop_to_aspect: crop the centre to the target aspect instead of squashing.
        seed: seeds the split, shuffling, augmentation and weight initialisation.
        learning_rate: default: the strategy's (RMSprop 1e-3).
        patience: stop after this many epochs without a better val_loss (None: never).
        class_weight: None or "balanced" (weights inversely proportional to class frequency).
        split: train,validation,test fractions when ``data`` has no split folders.
        verbose: Keras' fit verbosity.
        progress: print scan/decode progress and per-epoch lines.
        backbone, head, weights: for pretrained strategies: a name from ``smallvision backbones``,
            "flatten" or "gap", and "imagenet" / None / a weights file.
        start, head_epochs: for finetune: a features-augment run (folder or model.keras) to
            fine-tune, or else how many epochs to train the head first (default 50).
        run_dir: the run folder itself (instead of a new timestamped one under ``out``).

    Returns:
        The finished :class:`~smallvision.runs.Run`.
    """
    from . import strategies as strategies_mod
    from .data.dataset import balanced_class_weight

    strat = strategies_mod.get(strategy)
    epochs = strat.DEFAULT_EPOCHS if epochs is None else int(epochs)
    learning_rate = strat.DEFAULT_LEARNING_RATE if learning_rate is None else float(learning_rate)
    _check_positive(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate)
    if patience is not None:
        _check_positive(patience=patience)
    if class_weight not in (None, "none", "balanced"):
        raise SmallvisionError(f"class weight must be 'balanced' or 'none'. Received: {class_weight!r}")
    fractions = parse_fractions(split)
    if start is not None:
        start = os.path.abspath(start)
    if head_epochs is not None:
        _check_positive(head_epochs=head_epochs)
    options = {k: v for k, v in (("backbone", backbone), ("head", head), ("weights", weights), ("start", start),
                                 ("head_epochs", head_epochs)) if v is not None}
    unknown = [k for k in options if k not in getattr(strat, "OPTIONS", ())]
    if unknown:
        users = [n for n, m in strategies_mod.STRATEGIES.items() if unknown[0] in getattr(m, "OPTIONS", ())]
        raise SmallvisionError(f"strategy {strategy} takes no --{unknown[0].replace('_', '-')} "
                               f"(it is for: {', '.join(users)})")
    class_names = _scan_classes(data)
    try:
        if hasattr(strat, "validate"):
            strat.validate(options, class_names)
        if image_size is None:
            image_size = strat.default_image_size(options) if hasattr(strat, "default_image_size") else DEFAULT_IMAGE_SIZE
    except SmallvisionError:
        raise
    except ValueError as e:
        raise SmallvisionError(f"strategy {strat.NAME}: {e}") from None
    if options.get("weights") not in (None, "imagenet"):  # a file, checked above: recorded so a resume finds it
        options["weights"] = os.path.abspath(options["weights"])
    spec = _spec(image_size, crop_to_aspect)
    num_classes = len(class_names)
    model = _build(strat, spec, num_classes, seed, learning_rate, options)  # bad options fail before decoding
    t0 = time.perf_counter()
    prep = prepare(data, spec, fractions, seed, progress=progress)
    weights = balanced_class_weight(prep.labels["train"], num_classes) if class_weight == "balanced" else None
    counts = np.bincount(prep.labels["train"], minlength=num_classes)
    if weights is None and counts.max() > 1.5 * max(counts.min(), 1) and progress:
        _log(f"note: train classes are imbalanced ({dict(zip(prep.class_names, counts.tolist()))}); "
             "consider --class-weight balanced")

    run = Run.create_at(run_dir) if run_dir else Run.create(out, strategy)
    config = dict(
        strategy=strategy, data=os.path.abspath(data), image_size=[spec.height, spec.width],
        crop_to_aspect=spec.crop_to_aspect, decode=spec.key, epochs=epochs, batch_size=int(batch_size),
        learning_rate=learning_rate, optimizer="rmsprop", seed=int(seed), patience=patience,
        class_weight=class_weight if class_weight != "none" else None, class_weights=weights,
        split=list(fractions), split_origin=prep.splits.origin, class_names=prep.class_names,
        counts={name: np.bincount(prep.labels[name], minlength=num_classes).tolist() for name, _ in prep.splits.items()},
        data_index_sha256=prep.index.digest(), rejected=len(prep.index.rejects),
        duplicates=len(prep.splits.duplicates), options=options, versions=versions())
    run.write_config(config)
    run.write_data_files(prep.index, prep.splits)
    run.set_status(status="running", started=_now())
    if progress:
        _log(f"run folder: {run.path}")
    return _fit_and_finish(run, model, prep, config, None, verbose, progress, t0)


def resume(run_path, epochs=None, verbose="auto", progress=True, data=None):
    """Continue an interrupted (or finished, with more ``epochs``) run from its last checkpoint.

    ``data`` points at the data folder when it has moved since the run started; its content
    must be the same (the data-index hash is checked).
    """
    import keras

    from . import strategies as strategies_mod

    t0 = time.perf_counter()
    run = Run.open(run_path)
    config = run.config
    if epochs is not None:
        _check_positive(epochs=epochs)
        config["epochs"] = int(epochs)
    state = run.state
    if data is not None:
        config["data"] = os.path.abspath(data)
    prep = prepare(config["data"], DecodeSpec(*config["image_size"], config["crop_to_aspect"]),
                   tuple(config["split"]), config["seed"], progress=progress)
    if prep.index.digest() != config["data_index_sha256"]:
        raise SmallvisionError(f"{config['data']}: the data changed since run {run.path} started "
                               f"(index sha256 {prep.index.digest()[:12]} != {config['data_index_sha256'][:12]}); "
                               "start a new run instead")
    run.write_config(config)
    if state and state.get("epochs_done"):
        if progress:
            _log(f"resuming {run.path} after epoch {state['epochs_done']} of {config['epochs']}")
        keras.utils.set_random_seed(config["seed"] + state["epochs_done"])
        model = keras.saving.load_model(run.file("checkpoint", state["last"]))
        if state.get("stopped_early") and epochs is not None:
            state = dict(state, stopped_early=False, wait=0)
    else:  # killed before the first epoch was committed: start again, same seed
        if progress:
            _log(f"resuming {run.path}: no epoch was committed; starting from epoch 1")
        state = None
        model = _build(strategies_mod.get(config["strategy"]), prep.spec, len(prep.class_names),
                       config["seed"], config["learning_rate"], config.get("options"))
    run.set_status(status="running", resumed=_now())
    return _fit_and_finish(run, model, prep, config, state, verbose, progress, t0)


def _scan_classes(data):
    from .data.scan import find_files
    return find_files(os.fspath(data))[0]


def _build(strat, spec, num_classes, seed, learning_rate, options=None):
    import keras

    keras.utils.set_random_seed(seed)
    try:
        return strat.build((spec.height, spec.width), num_classes, seed, learning_rate, options or {})
    except ValueError as e:
        raise SmallvisionError(f"strategy {strat.NAME}: {e}") from None


def _fit_and_finish(run, model, prep, config, state, verbose, progress, t0):
    """Train through the strategy's stages, then evaluate and publish; ``t0``: when this
    process began on the run (wall time adds up across resumes in run.json)."""
    before = run.status.get("wall_seconds", 0)
    from . import strategies as strategies_mod
    from . import train as train_mod
    from .data.dataset import ImageBatches
    from .report.plots import plot_curves

    strat = strategies_mod.get(config["strategy"])
    options = config.get("options") or {}
    n = len(prep.class_names)
    cw = {int(k): v for k, v in config["class_weights"].items()} if config.get("class_weights") else None
    stages = strat.stages(config) if hasattr(strat, "stages") else [("train", config["epochs"], None)]
    try:
        inputs = strat.inputs(prep, options, progress) if hasattr(strat, "inputs") else prep.images
        train_ds = ImageBatches(inputs["train"], prep.labels["train"], n, config["batch_size"], shuffle=True,
                                seed=config["seed"], class_weight=cw)
        val_ds = ImageBatches(inputs["validation"], prep.labels["validation"], n, config["batch_size"])
        for k, (name, epochs, enter) in enumerate(stages):
            state = dict(state or {"epochs_done": 0, "wait": 0})
            if state.get("stage", -1) < k:  # the last checkpoint holds the previous stage's model
                if enter is not None:
                    model = enter(model)
                start = 0 if k == 0 else state["epochs_done"]
                if k:  # early stopping and patience count per stage
                    state.update(stopped_early=False, wait=0)
                state.update(stage=k, stage_start=start, stages=dict(state.get("stages") or {}, **{name: start + 1}))
                if progress and len(stages) > 1:
                    _log(f"stage {k + 1} of {len(stages)}: {name}, epochs {start + 1}-{start + epochs}")
            elif k < state["stage"]:
                continue
            state = train_mod.fit(model, run, train_ds, val_ds, state["stage_start"] + epochs, state,
                                  config.get("patience"), verbose=verbose, log=_log if progress and verbose == 0 else None)
    except KeyboardInterrupt:
        run.set_status(status="interrupted", interrupted=_now(), wall_seconds=_wall(before, t0))
        raise SmallvisionError(f"interrupted; continue with: smallvision train --resume {run.path}") from None
    except OSError as e:  # disk full, folder removed, ...: the last committed epoch is intact
        try:
            run.set_status(status="failed", error=f"{type(e).__name__}: {e}")
        except OSError:
            pass
        raise SmallvisionError(f"{run.path}: cannot write the run folder ({e.strerror or e}); fix that and "
                               f"continue with: smallvision train --resume {run.path}") from None
    except Exception as e:
        run.set_status(status="failed", error=f"{type(e).__name__}: {e}")
        raise
    if not state.get("best"):
        raise SmallvisionError(f"{run.path}: no epoch finished; nothing to evaluate")
    sets = {name: (inputs[name], prep.labels[name], prep.paths(name)) for name in ("validation", "test")}
    export = (lambda m: strat.export(m, config["image_size"], options)) if hasattr(strat, "export") else None
    train_mod.finish(run, state, sets, prep.class_names, config["batch_size"], export=export)
    plot_curves(run.read_history(), run.file("curves.png"),
                title=f"{config['strategy']} on {os.path.basename(os.path.normpath(config['data']))}",
                stages=state.get("stages"))
    run.set_status(status="finished", finished=_now(), best_epoch=state["best_epoch"],
                   epochs_done=state["epochs_done"], wall_seconds=_wall(before, t0))
    if progress:
        _log(describe(run))
    return run


def _wall(before, t0):
    """Seconds spent on a run so far: earlier processes' share plus this one's (a process
    killed with -9 never says how long it ran, so its share is missing)."""
    return round(before + time.perf_counter() - t0, 1)


def describe(run):
    """One paragraph on a finished run: best epoch and validation/test accuracy."""
    m = run.metrics
    parts = [f"{run.path}: best epoch {m['best_epoch']} of {m['epochs_done']}"]
    for name in ("validation", "test"):
        if name in m:
            parts.append(f"{name} accuracy {m[name]['accuracy']:.4f} (loss {m[name]['loss']:.4f}, n={m[name]['n']})")
    return "; ".join(parts)


def _now():
    return datetime.datetime.now().isoformat(timespec="seconds")


def _check_positive(**values):
    for k, v in values.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
            raise SmallvisionError(f"{k.replace('_', '-')} must be a positive number. Received: {k}={v!r}")


# -- predict -------------------------------------------------------------------------------------

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")


def open_model(source):
    """A run folder or a .keras file -> (keras model, class names, DecodeSpec it expects).

    A run folder (or a model file inside one) gives the training's class names and decoding;
    a bare model file gives its input size and generic class names.
    """
    source = os.fspath(source)
    folder = source if os.path.isdir(source) else os.path.dirname(os.path.abspath(source))
    if os.path.isdir(source):
        run = Run.open(source)
        if not os.path.isfile(run.model_path):
            raise SmallvisionError(f"{source}: run has no model.keras yet (status: {run.status.get('status', '?')})")
        source = run.model_path
    elif not os.path.isfile(source):
        raise SmallvisionError(f"{source}: no such run folder or model file")
    elif not source.endswith(".keras"):
        raise SmallvisionError(f"{source}: expected a run folder or a .keras model file")
    model = load_model(source)
    if os.path.isfile(os.path.join(folder, "config.json")):
        c = Run.open(folder).config
        return model, c["class_names"], DecodeSpec(*c["image_size"], c.get("crop_to_aspect", False))
    _, h, w, _ = model.input_shape
    n = model.output_shape[-1]
    return model, [f"class_{i}" for i in range(2 if n == 1 else n)], DecodeSpec(h, w)


def load_model(path):
    """Open a saved model with Keras' safe mode on; one-line error when it cannot be used."""
    import keras

    try:
        return keras.saving.load_model(path)
    except Exception as e:
        raise SmallvisionError(f"{path}: cannot load the model: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def expand_paths(paths):
    """Files, folders (searched recursively for image files) and glob patterns -> sorted file list.

    A path that matches nothing is returned as is, so that it is reported per file."""
    out = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                out += [os.path.join(dirpath, f) for f in sorted(filenames)
                        if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES)]
        elif any(ch in p for ch in "*?[") and not os.path.exists(p):
            matches = sorted(glob.glob(p, recursive=True))
            out += matches or [p]
        else:
            out.append(p)
    return out


def predict(source, paths, batch_size=32, chunk=256):
    """Classify image files with a trained run (or a .keras file).

    Each file is decoded exactly as in training. A file that cannot be read is reported in
    its row (``error``) and the others go on.

    Returns:
        A list of dicts: ``path``, ``class``, ``probability``, ``probabilities`` ({class: p}), ``error``.
    """
    from .train import predict_probabilities

    model, class_names, spec = open_model(source)
    files = expand_paths(paths)
    if not files:
        raise SmallvisionError(f"no image files found in {', '.join(map(str, paths))}")

    def decode(path):
        try:
            return read_image(path, spec)[0], None
        except BadImage as e:
            return None, str(e)

    from .progress import Progress

    rows = []
    bar = Progress("predicting", len(files), enabled=len(files) > chunk)
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for start in range(0, len(files), chunk):
            part = files[start:start + chunk]
            decoded = list(pool.map(decode, part))
            ok = [i for i, (a, _) in enumerate(decoded) if a is not None]
            probs = predict_probabilities(model, np.stack([decoded[i][0] for i in ok]) if ok else [],
                                          len(class_names), batch_size)
            p_of = dict(zip(ok, probs))
            for i, path in enumerate(part):
                if i in p_of:
                    p = p_of[i]
                    k = int(np.argmax(p))
                    rows.append({"path": path, "class": class_names[k], "probability": round(float(p[k]), 5),
                                 "probabilities": {c: round(float(v), 5) for c, v in zip(class_names, p)},
                                 "error": None})
                else:
                    rows.append({"path": path, "class": None, "probability": None, "probabilities": None,
                                 "error": decoded[i][1]})
            bar.update(len(part))
    bar.close()
    return rows


# -- demo ----------------------------------------------------------------------------------------

def demo(out="smallvision-demo", data=None, strategy="scratch", epochs=None, image_size=None, progress=True,
         verbose="auto"):
    """The main job, offline: write the digits stand-in (unless ``data`` is given), train, predict.

    Returns the run.
    """
    from .data.demo import write_digits

    if data is None:
        data = write_digits(os.path.join(out, "digits"))
        if progress:
            _log(f"demo data: scikit-learn's 8x8 handwritten digits written as an image folder at {data} "
                 "(a stand-in; run on your own folder with --data DIR)")
        epochs = 6 if epochs is None else epochs
        image_size = image_size or (80, 80)
    run = train(data, strategy, out=os.path.join(out, "runs"), epochs=epochs,
                image_size=image_size, progress=progress, verbose=verbose)
    index = Run.open(run.path)
    test_files = [os.path.join(data, *r.split("/")) for r in _split_paths(index, "test")[:5]]
    for row in predict(run.path, test_files):
        _log(f"predict {row['path']}: {row['class']} ({row['probability']:.3f})")
    return run


def _split_paths(run, split):
    import csv

    with open(run.file("index.csv"), encoding="utf-8", newline="") as f:
        return [r["path"] for r in csv.DictReader(f) if r["split"] == split]


# -- explain -------------------------------------------------------------------------------------

def explain_conv(image=None, kernel="laplacian", padding="valid", stride=1, out="conv.png"):
    """Apply a kernel to an image with the NumPy reference convolution; write input | output.

    Without ``image``, returns the slide's worked example (a kernel centre of -4 over a
    pixel of 2 gives -8). Returns ``(text summary, PNG path or None)``.
    """
    from .explain.conv import load_kernel, output_size, size_formula, worked_example
    from .explain.maps import conv_picture, load_grey

    if padding not in ("valid", "same"):
        raise SmallvisionError(f"padding must be valid or same. Received: {padding!r}")
    _check_positive(stride=stride)
    if image is None:
        total, text = worked_example()
        return ("The slide's worked example: the kernel's centre is laid over the source pixel, which is "
                "replaced by the weighted sum of itself and its neighbours:\n" + text), None
    k = load_kernel(kernel)
    grey = load_grey(image)
    (h, w), (kh, kw) = grey.shape, k.shape
    result, (pw, ph) = conv_picture(grey, k, out, stride=stride, padding=padding)
    rows = "\n".join("    " + " ".join(f"{v:g}" for v in row) for row in k)
    text = (f"kernel {kernel} ({kh}x{kw}):\n{rows}\n"
            f"input {h}x{w} (height x width), padding {padding}, stride {stride}\n"
            f"output {result.shape[0]}x{result.shape[1]}, values {result.min():.4g} .. {result.max():.4g}\n"
            f"  rows:    {size_formula(h, kh, stride, padding)}\n"
            f"  columns: {size_formula(w, kw, stride, padding)}\n"
            f"wrote {out} ({pw}x{ph} pixels: input | output)")
    assert result.shape[:2] == (output_size(h, kh, stride, padding), output_size(w, kw, stride, padding))
    return text, out


def _model_for(target, image_size=None):
    """A run folder, a .keras file or a strategy name -> (keras model, description)."""
    from . import strategies as strategies_mod

    if os.path.exists(target):
        model, _, spec = open_model(target)
        return model, f"{target} ({spec.height}x{spec.width})"
    if target in strategies_mod.STRATEGIES:
        size = _spec(image_size or DEFAULT_IMAGE_SIZE, False)
        return _build(strategies_mod.get(target), size, 2, 0, 1e-3), f"strategy {target} at {size.height}x{size.width}"
    raise SmallvisionError(f"{target}: not a run folder, a .keras file, or a strategy "
                           f"({', '.join(strategies_mod.STRATEGIES)})")


def explain_model(target, image_size=None):
    """Layer table (output shape, parameters, receptive field, cumulative stride).

    Returns ``(text, rows)``.
    """
    from .explain.anatomy import format_table, last_conv, layer_table

    model, what = _model_for(target, image_size)
    rows = layer_table(model)
    conv = last_conv(rows)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    text = (f"{what}: {model.count_params():,} parameters ({trainable:,} trainable)\n" + format_table(rows))
    if conv:
        text += f"\nlast conv layer {conv.name} sees {conv.receptive_field}x{conv.receptive_field} input pixels"
    return text, rows


def explain_pooling(image_size=DEFAULT_IMAGE_SIZE, train_data=None, epochs=5, out="runs", progress=True):
    """The chapter's convnet beside the same net without max-pooling; optionally train both.

    Returns ``(text, facts)`` where facts holds the numbers printed.
    """
    from .explain.anatomy import last_conv, layer_table

    facts = {}
    for name in ("scratch", "nopool"):
        model, _ = _model_for(name, image_size)
        rows = layer_table(model)
        dense = [r for r in rows if r.kind == "Dense"][-1]
        flat = [r for r in rows if r.kind == "Flatten"][-1]
        conv = last_conv(rows)
        facts[name] = dict(params=model.count_params(), dense_params=dense.params, features=flat.output_shape[0],
                           last_conv_shape=conv.output_shape, receptive_field=conv.receptive_field)
    a, b = facts["scratch"], facts["nopool"]
    shape = lambda s: "x".join(map(str, s))
    lines = [f"{'':<34}{'with max-pooling':>20}{'without':>20}",
             f"{'parameters':<34}{a['params']:>20,}{b['params']:>20,}",
             f"{'features into the dense layer':<34}{a['features']:>20,}{b['features']:>20,}",
             f"{'  (last conv output)':<34}{shape(a['last_conv_shape']):>20}{shape(b['last_conv_shape']):>20}",
             f"{'dense layer parameters':<34}{a['dense_params']:>20,}{b['dense_params']:>20,}",
             f"{'receptive field of the last conv':<34}{str(a['receptive_field']) + 'x' + str(a['receptive_field']):>20}"
             f"{str(b['receptive_field']) + 'x' + str(b['receptive_field']):>20}",
             f"Without pooling the dense layer has {b['dense_params'] / a['dense_params']:.0f}x the weights, and the "
             f"last conv layer sees {b['receptive_field']}x{b['receptive_field']} pixels: too little of the image to "
             "learn what a cat is."]
    if train_data is not None:
        for name in ("scratch", "nopool"):
            run = train(train_data, name, out=out, epochs=epochs, image_size=image_size, progress=progress,
                        verbose=0)
            m = run.metrics
            facts[name].update(run=run.path, validation_accuracy=m["validation"]["accuracy"],
                               test_accuracy=m.get("test", {}).get("accuracy"))
        acc = lambda f, k: "-" if f.get(k) is None else f"{f[k]:.4f}"
        lines += [f"after {epochs} epochs on {train_data}:",
                  f"{'validation accuracy':<34}{acc(a, 'validation_accuracy'):>20}{acc(b, 'validation_accuracy'):>20}",
                  f"{'test accuracy':<34}{acc(a, 'test_accuracy'):>20}{acc(b, 'test_accuracy'):>20}"]
    return "\n".join(lines), facts


def _run_image(run_path, image):
    model, class_names, spec = open_model(run_path)
    try:
        pixels, _ = read_image(image, spec)
    except BadImage as e:
        raise SmallvisionError(f"{image}: {e}") from None
    return model, class_names, pixels


def explain_activations(run_path, image, out="activations.png", per_layer=16):
    """Feature maps of every conv layer for one image, as a PNG grid. Returns ``(text, path)``."""
    from .explain.maps import activation_grid, activations

    model, _, pixels = _run_image(run_path, image)
    maps = activations(model, pixels)
    w, h = activation_grid(maps, out, per_layer=per_layer)
    lines = [f"{'layer':<10}{'shape':>16}{'zero':>8}{'mean':>10}"]
    for name, a in maps.items():
        lines.append(f"{name:<10}{'x'.join(map(str, a.shape)):>16}{(a <= 0).mean():>8.0%}{a.mean():>10.3f}")
    lines.append(f"wrote {out} ({w}x{h} pixels: per layer, its {per_layer} most active channels)")
    return "\n".join(lines), out


def explain_heatmap(run_path, image, out="heatmap.png", class_name=None):
    """Grad-CAM: where the model looked for its answer. Returns ``(text, path)``."""
    from .explain.maps import grad_cam, heatmap_picture

    model, class_names, pixels = _run_image(run_path, image)
    k = None
    if class_name is not None:
        if class_name not in class_names:
            raise SmallvisionError(f"class {class_name!r} is not one of {class_names}")
        k = class_names.index(class_name)
    cam, probs, k = grad_cam(model, pixels, k)
    w, h = heatmap_picture(pixels, cam, out)
    r, c = np.unravel_index(int(np.argmax(cam)), cam.shape)
    best = int(np.argmax(probs))
    return (f"{image}: predicted {class_names[best]} ({probs[best]:.3f}); heatmap for {class_names[k]}\n"
            f"strongest evidence at {100 * (r + 0.5) / cam.shape[0]:.0f}% down, "
            f"{100 * (c + 0.5) / cam.shape[1]:.0f}% across ({cam.shape[0]}x{cam.shape[1]} grid of the last conv layer)\n"
            f"wrote {out} ({w}x{h} pixels: image | heatmap)"), out


# -- data ----------------------------------------------------------------------------------------

DATASETS = ("cats-vs-dogs",)


def data_get(dataset="cats-vs-dogs", to="data", source=None, url=None, sha256=None, sizes=None, progress=True):
    """Download (or read from ``source``) a data set and write it in the chapter's layout.

    Returns the summary of :func:`smallvision.data.fetch.get_cats_vs_dogs`.
    """
    from .data import fetch

    if dataset not in DATASETS:
        raise SmallvisionError(f"unknown data set {dataset!r}; expected one of: {', '.join(DATASETS)}")
    if sizes is not None:
        if len(sizes) != 3 or min(sizes) < 1:
            raise SmallvisionError(f"sizes must be three positive numbers train,validation,test. Received: {sizes}")
        sizes = tuple(zip(("train", "validation", "test"), (int(n) for n in sizes)))
    return fetch.get_cats_vs_dogs(to, source=source, url=url or fetch.OFFICIAL_URL, sha256=sha256,
                                  sizes=sizes or fetch.CHAPTER_SIZES, progress=progress)


def data_split(data, to, validation=0.15, test=0.15, seed=0, progress=True):
    """Split a plain class-folder set into ``to/{train,validation,test}/`` (hard links where possible)."""
    from .data.tools import split_folder
    return split_folder(data, to, validation, test, seed, progress)


def data_check(data, json_path=None, progress=True):
    """Check a data folder; returns ``(report dict, text)`` and writes the report as JSON if asked."""
    from .data.tools import check_folder, format_check, write_check

    report = check_folder(data, progress=progress)
    if json_path:
        write_check(report, json_path)
    return report, format_check(report)


# -- backbones -----------------------------------------------------------------------------------

def backbones():
    """Rows (name, native size, preprocessing, weights from, status) of the backbone registry."""
    from .backbones.registry import table
    return table()


# -- ladder and report -----------------------------------------------------------------------------

def ladder(data, out=None, strategies=None, backbone=None, epochs_scale=1.0, seeds=1, image_size=None,
           batch_size=32, split="0.7,0.15,0.15", progress=True):
    """Train the chapter's strategies on ``data`` into one ladder folder and write its report.

    Re-running with the same ``out`` continues an interrupted ladder. Returns the folder.
    See :func:`smallvision.ladder.run_ladder` for the arguments.
    """
    from .ladder import run_ladder
    _check_positive(batch_size=batch_size)
    if image_size is not None:
        spec = _spec(image_size, False)
        image_size = (spec.height, spec.width)
    return run_ladder(data, out, strategies, backbone, epochs_scale, seeds, image_size, batch_size, split,
                      progress=progress, verbose=0)


def report(path, out=None):
    """Write report.md (+ report_files/) and report.html for a ladder or run folder."""
    from .report import write_report
    return write_report(path, out)


def summary_table(path):
    """The ladder's (or run's) strategy table as fixed-width text."""
    from .report.collect import collect
    from .report.render import percent
    rows = [("strategy", "backbone", "seeds", "best epoch", "validation", "test")]
    for r in collect(path)["rows"]:
        rows.append((r["strategy"], r["backbone"], str(r["seeds"]), ", ".join(map(str, r["best_epochs"])),
                     percent(r["val_accuracy"]), percent(r["test_accuracy"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)
