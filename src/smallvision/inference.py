"""Using a trained model: open a run folder or a ``.keras`` file once, and classify image files
exactly as training decoded them (the scan's reader and decoder, the run's size and crop)."""
import dataclasses
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .data.decode import BadImage, DecodeSpec, opencv_threads
from .data.imagefile import expand, read_image
from .errors import SmallvisionError
from .labels import generic_names
from .progress import Progress
from .runs import load_model, resolve_model


@dataclasses.dataclass
class OpenModel:
    """A loaded classifier and what it expects."""

    model: object  # keras.Model, uint8 images in, probabilities out (None: opened as the run's model.onnx)
    class_names: list
    spec: DecodeSpec  # how to decode an image file for it
    source: str  # the model file
    novelty: object = None  # a run's novelty.Novelty (None: a run written before it, or a bare file)
    width: int = 0  # the classifier's output columns (0: the Keras model's)

    def outputs(self, out):
        """``(probabilities, [(novelty, unknown)] or None)`` from what its runner returned (with a
        novelty, the runner's model also returns the embedding, after the classifier's outputs)."""
        from .novelty import split
        return split(out, len(self.class_names), self.width or int(self.model.output_shape[-1]), self.novelty)

    @property
    def description(self):
        return f"{self.source} ({self.spec.height}x{self.spec.width})"


def open_model(source):
    """A run folder, a model.keras inside one, or a bare .keras file -> :class:`OpenModel`.

    A run folder gives the training's class names and decoding; a bare model file gives its
    input size and generic class names (class_0, class_1, …).
    """
    where = resolve_model(source)
    return _load(where)


def _load(where):
    from .novelty import Novelty
    model = load_model(where.model_path)
    c = where.config
    if c is not None:
        run_dir = os.path.dirname(os.path.abspath(where.model_path))
        novelty = Novelty.load(run_dir) if os.path.basename(where.model_path) == "model.keras" else None
        return OpenModel(model, list(c.class_names), DecodeSpec(*c.image_size, c.crop_to_aspect), where.model_path,
                         novelty)
    _, h, w, _ = model.input_shape
    return OpenModel(model, generic_names(model.output_shape[-1]), DecodeSpec(h, w), where.model_path)


def open_for_classifying(source, where=None, count=None):
    """A run folder, a .keras file or an export folder opened for classifying:
    ``(opened, runner, keras)`` — ``keras()`` gives the Keras model (loaded on first call), None
    for an export. An export runs in its own runtime with labels.json's classes and decoding; a
    run folder on its own ``model.onnx`` (:mod:`smallvision.deploy`: no TensorFlow is imported;
    written on first use for a run made before it); a bare .keras file, or a run whose model
    does not export, through :func:`runtime.frozen_runner` (exported to ONNX in the cache once
    when ``count`` images repay it). ``where``: the source already resolved."""
    from .runtime import chosen, frozen_runner, is_export, model_key, open_export
    if where is None and is_export(source):
        opened = open_export(source)
        return opened, opened.runner, None
    where = where or resolve_model(source)
    if chosen() != "keras" and where.run is not None and os.path.samefile(where.model_path, where.run.model_path):
        deployed = _open_deployed(where)
        if deployed is not None:
            return deployed
    opened = _load(where)
    key, model = model_key(where.model_path), opened.model
    if opened.novelty is not None:  # one model, two outputs: the classifier's and the embedding
        from .novelty import with_embedding
        try:
            key, model = key + "-embedding", with_embedding(opened.model, opened.novelty.backbone or None)[0]
        except Exception as e:  # a model this version cannot tap: classify as before, without the fields
            print(f"warning {where.model_path}: no novelty ({type(e).__name__}: {str(e)[:200]})", file=sys.stderr)
            opened.novelty = None
    return opened, frozen_runner(model, key, count=count, what=where.model_path), lambda: opened.model


def _open_deployed(where):
    """The run's own model.onnx opened without Keras (written first when it is missing or stale:
    that once needs Keras), or None when it cannot be had (then the caller goes the Keras way)."""
    from . import deploy
    from .labels import is_binary
    from .novelty import Novelty
    from .runtime import OnnxRunner
    run_dir = where.run.path
    labels = deploy.current(run_dir, where.model_path)
    loaded = []
    if labels is None:
        try:
            import onnxruntime  # noqa: F401
            loaded.append(_load(where))
            labels = deploy.write(where, loaded[0])
        except Exception as e:  # not installed, a read-only folder, a model that does not export, ...
            print(f"note: {run_dir}: no model.onnx in the run folder ({str(e)[:200]}); using the Keras model",
                  file=sys.stderr)
            return None
    c = where.config
    names = list(c.class_names)
    novelty = Novelty.load(run_dir) if labels.embedding else None
    opened = OpenModel(None, names, DecodeSpec(*c.image_size, c.crop_to_aspect), where.model_path, novelty,
                       1 if is_binary(len(names)) else len(names))

    def keras():
        if not loaded:
            loaded.append(_load(where))
        return loaded[0].model
    return opened, OnnxRunner(os.path.join(run_dir, deploy.ONNX)), keras


def read_one(path, spec):
    """One image file decoded for the model, or a one-line error naming it."""
    try:
        return read_image(path, spec)[0]
    except BadImage as e:
        raise SmallvisionError(f"{path}: {e}") from None


def predict(source, paths, batch_size=32, chunk=256, progress=True, tta=False):
    """Classify image files with a trained run (or a .keras file, or an export).

    Args:
        source: a run folder, a .keras model file, or an export folder (``smallvision export``:
            labels.json and the model file inside; ONNX needs no TensorFlow).
        paths: files, folders (searched recursively for image files) and glob patterns; one
            that names nothing (missing, no match, no image inside, an unreadable folder) is
            a one-line error before any work.
        batch_size: images per forward pass.
        chunk: files decoded (in parallel) per step.
        tta: test-time augmentation: average the probabilities of each image and its mirror
            image (twice the work).

    Each file is read and decoded exactly as the scan does in training; a file that cannot be
    used (a pipe, a corrupt or truncated image, …) is reported in its row (``error``, the
    scan's reason) and the others go on. The model runs through the CPU inference runtime
    (:mod:`smallvision.runtime`: exported to ONNX once per model file when there are enough
    files to repay it, else Keras).

    A run trained by this version also says how unlike its training images each image is
    (:mod:`smallvision.novelty`): ``novelty`` (the score) and ``unknown`` (above the threshold
    calibrated on its validation images: likely a photo of none of its classes).

    Returns:
        A list of dicts: ``path``, ``class``, ``probability``, ``probabilities`` ({class: p}),
        ``error``; and ``novelty``, ``unknown`` for a run that has them.
    """
    from .runtime import is_export, run_batches

    where = None if is_export(source) else resolve_model(source)  # cheap checks first, in the order of the arguments
    files, warnings = expand(paths)
    if progress:
        for path, message in warnings:
            print(f"warning {path}: {message}", file=sys.stderr)
    opened, runner, _ = open_for_classifying(source, where, count=len(files) * (2 if tta else 1))
    spec, class_names = opened.spec, opened.class_names
    has_novelty = getattr(opened, "novelty", None) is not None

    outputs = opened.outputs

    def classify(images):
        probs, novelty = outputs(run_batches(runner, images, batch_size))
        if tta:  # the mirror image: the chapter's RandomFlip("horizontal") direction (novelty: of the image)
            probs = (probs + outputs(run_batches(runner, np.ascontiguousarray(images[:, :, ::-1]), batch_size))[0]) / 2
        return probs, novelty

    def decode(path):
        try:
            return read_image(path, spec)[0], None
        except BadImage as e:
            return None, str(e)

    rows = []
    bar = Progress("predicting", len(files), enabled=progress and len(files) > chunk)
    chunks = [files[start:start + chunk] for start in range(0, len(files), chunk)]
    with opencv_threads(1), ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        pending = [pool.submit(decode, path) for path in chunks[0]] if chunks else []
        for n, part in enumerate(chunks):
            decoded = [f.result() for f in pending]
            # the next chunk decodes while this one runs through the model
            pending = [pool.submit(decode, path) for path in chunks[n + 1]] if n + 1 < len(chunks) else []
            ok = [i for i, (a, _) in enumerate(decoded) if a is not None]
            probs, novelty = classify(np.stack([decoded[i][0] for i in ok])) if ok else ([], None)
            p_of = dict(zip(ok, probs))
            n_of = dict(zip(ok, novelty)) if novelty is not None else {}
            for i, path in enumerate(part):
                if i in p_of:
                    p = p_of[i]
                    k = int(np.argmax(p))
                    row = {"path": path, "class": class_names[k], "probability": round(float(p[k]), 5),
                           "probabilities": {c: round(float(v), 5) for c, v in zip(class_names, p)}, "error": None}
                else:
                    row = {"path": path, "class": None, "probability": None, "probabilities": None,
                           "error": decoded[i][1]}
                if has_novelty:
                    row["novelty"], row["unknown"] = n_of.get(i, (None, None))
                rows.append(row)
            bar.update(len(part))
    bar.close()
    return rows
