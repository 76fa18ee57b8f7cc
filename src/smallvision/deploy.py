"""A run's deployable model: ``model.onnx`` and ``labels.json`` in the run folder, beside
``model.keras``, so that ``predict`` and ``serve`` start without TensorFlow.

::

    <run>/model.onnx     model.keras's inference graph in ONNX: output 0 the probabilities and,
                         for a run with novelty.npz, output 1 the embedding novelty is measured on
    <run>/labels.json    what a program needs besides it (class names, input, decoding steps), the
                         sha256 of model.keras it was made from and of model.onnx itself, and
                         what the parity check measured

A run writes both when it finishes (:func:`write`, after novelty.npz); a run folder written
before this gets them on first use. They are made in a temporary folder inside the run folder
and checked against ``model.keras`` on the run's validation images (test when it has none)
with :data:`TOLERANCE` on every probability: on a mismatch nothing is written. ``model.onnx``
is renamed into place first, ``labels.json`` last: the pair is current when labels.json names
the sha256 of today's model.keras and of model.onnx (:func:`current`), so a kill between the
two renames leaves an old labels.json that no longer matches, and the next use writes both again.
"""
import os
import shutil
import sys
import uuid

import numpy as np

from ._io import sha256_file
from .errors import SmallvisionError
from .labelsfile import NAME as LABELS, LabelsFile

ONNX = "model.onnx"
TOLERANCE = 1e-4  # max |difference| of any class probability against the Keras model
EMBEDDING_TOLERANCE = 1e-3  # max |difference| of the embedding, relative to its largest value
CHECK_IMAGES = 256  # validation images the parity check runs (all of them when fewer)


def current(run_dir, model_path=None):
    """The run's :class:`~smallvision.labelsfile.LabelsFile` when its model.onnx is current (made
    from today's model.keras, and intact), else None."""
    model_path = model_path or os.path.join(run_dir, "model.keras")
    onnx, labels = os.path.join(run_dir, ONNX), os.path.join(run_dir, LABELS)
    if not (os.path.isfile(onnx) and os.path.isfile(labels) and os.path.isfile(model_path)):
        return None
    try:
        found = LabelsFile.read(run_dir)
    except SmallvisionError:
        return None
    if found.format != "onnx" or found.model_file != ONNX or \
            found.source.get("sha256") != sha256_file(model_path) or found.model_sha256 != sha256_file(onnx):
        return None
    return found


def check_images(where, spec, limit):
    """``(images, paths, which split)``: up to ``limit`` images of the run's validation split (test
    when it has none), decoded as in training; a bare model file has neither: a fixed random batch
    (no paths)."""
    from .data.decode import BadImage
    from .data.imagefile import read_image
    if where.run is not None:
        rows = where.run.read_csv("index.csv")
        data = where.run.config.data
        for split in ("validation", "test"):
            images, paths = [], []
            for path in [os.path.join(data, r["path"]) for r in rows if r["split"] == split][:limit]:
                try:
                    images.append(read_image(path, spec)[0])
                    paths.append(path)
                except (BadImage, OSError):
                    continue
            if images:
                return np.stack(images), paths, split
    shape = (min(limit, 16), spec.height, spec.width, 3)
    return np.random.default_rng(0).integers(0, 256, size=shape).astype(np.uint8), [], "random"


def compare(got, expected, width):
    """The parity figures of ``got`` against ``expected`` ([probabilities | embedding] rows):
    max |Δprobability|, differing decisions, max relative |Δembedding| (0 without one)."""
    from .labels import as_probabilities
    n = expected.shape[1] if width is None else width
    p_got, p_want = as_probabilities(got[:, :n], max(2, n)), as_probabilities(expected[:, :n], max(2, n))
    diff = float(np.abs(p_got - p_want).max()) if len(got) else 0.0
    differing = int((p_got.argmax(1) != p_want.argmax(1)).sum())
    emb = 0.0
    if expected.shape[1] > n and len(got):
        scale = max(float(np.abs(expected[:, n:]).max()), 1e-12)
        emb = float(np.abs(got[:, n:] - expected[:, n:]).max()) / scale
    return dict(max_difference=diff, differing=differing, max_embedding_difference=emb)


def write(where, opened, limit=CHECK_IMAGES):
    """Write ``model.onnx`` + ``labels.json`` into ``where``'s run folder from ``opened`` (the
    run's model, classes, decoding, novelty: :func:`smallvision.inference.open_model`), checked
    against the Keras model on up to ``limit`` images. Returns the labels file; raises
    :class:`SmallvisionError` (one line) when the model does not export or the export does not
    match (then nothing is written)."""
    from .runtime import ExportError, KerasRunner, OnnxRunner, convert, run_batches
    run_dir = where.run.path
    model, width = opened.model, int(opened.model.output_shape[-1])
    if opened.novelty is not None:
        from .novelty import with_embedding
        try:
            model, width = with_embedding(opened.model, opened.novelty.backbone or None)
        except Exception as e:  # a model this version cannot tap: the classifier alone, without novelty
            print(f"warning {where.model_path}: no novelty ({type(e).__name__}: {str(e)[:200]})", file=sys.stderr)
    images, _, kind = check_images(where, opened.spec, limit)
    expected = run_batches(KerasRunner(model), images)
    precision = (where.config.options or {}).get("precision", "fp32") if where.config is not None else "fp32"
    tmp = os.path.join(run_dir, f".tmp-deploy-{uuid.uuid4().hex[:12]}")
    os.makedirs(tmp)
    try:
        path = os.path.join(tmp, ONNX)
        parts = _parts(where, opened)
        joined = parts is not None and _join(parts[0], parts[2], path, images, model is not opened.model, tmp)
        check = compare(run_batches(OnnxRunner(path), images), expected, width) if joined else None
        if check is None or not check["max_difference"] <= TOLERANCE:  # join failed: convert the whole model
            joined = False
            try:
                convert(model, path, "onnx", images)
            except ExportError as e:
                raise SmallvisionError(f"{where.model_path}: {e}") from None
            check = compare(run_batches(OnnxRunner(path), images), expected, width)
        runner = OnnxRunner(path)
        if not (check["max_difference"] <= TOLERANCE and check["max_embedding_difference"] <= EMBEDDING_TOLERANCE):
            raise SmallvisionError(f"{where.model_path}: its ONNX export differs from it on {kind} images (max "
                                   f"|Δprobability| {check['max_difference']:.3g} > {TOLERANCE:g} or embedding "
                                   f"{check['max_embedding_difference']:.3g} > {EMBEDDING_TOLERANCE:g}); no model.onnx")
        check.update(images=len(images), kind=kind, tolerance=TOLERANCE,
                     made="frozen network + head, joined" if joined else "the whole model converted")
        if precision == "int8":  # the run's frozen base computed in int8: so does its deployable model
            path, check = _quantized(where, opened, path, images, width, check,
                                     parts if joined and parts[1] else None, model is not opened.model, tmp)
        labels = labels_file(opened, where, "onnx", np.dtype(runner.dtype).name, check,
                             embedding=int(expected.shape[1] - width), model_sha256=sha256_file(path),
                             precision=precision)
        os.replace(path, os.path.join(run_dir, ONNX))
        labels.write(run_dir)  # the commit point: it names both files' sha256
        return labels
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _train_shas(where):
    return [r["sha256"] for r in where.run.read_csv("index.csv") if r["split"] == "train"]


def _parts(where, opened):
    """The run's cached frozen network and its head (:meth:`Strategy.deploy_parts`), or None."""
    if where.config is None or where.run is None:
        return None
    from . import strategies
    from .strategies import TrainSpec
    try:
        return strategies.get(where.config.strategy).deploy_parts(opened.model, TrainSpec.from_config(where.config),
                                                                  _train_shas(where))
    except Exception:  # anything unexpected: the whole model is converted instead
        return None


def _join(base_path, head, out, images, embedding, tmp):
    """Write ``out``: the frozen network's ONNX (``base_path``) feeding ``head`` (a Keras model on its
    output, converted here: a small graph), with the network's output as a second output when
    ``embedding``. False when it cannot be done (the caller converts the whole model)."""
    import onnx
    from onnx import compose, version_converter

    from .runtime import OnnxRunner, convert, run_batches
    try:
        head_path = os.path.join(tmp, "head.onnx")
        if not os.path.isfile(head_path):  # an int8 run joins the same head twice (fp32, then int8)
            convert(head, head_path, "onnx", run_batches(OnnxRunner(base_path), images[:2]).astype(np.float32))
        base, top = onnx.load(base_path), onnx.load(head_path)
        opset = {o.domain: o.version for o in base.opset_import}.get("", 13)
        if {o.domain: o.version for o in top.opset_import}.get("", opset) != opset:
            top = version_converter.convert_version(top, opset)
        top.ir_version = base.ir_version
        top = compose.add_prefix(top, "head/")
        merged = compose.merge_models(base, top, io_map=[(base.graph.output[0].name, top.graph.input[0].name)])
        if embedding:
            merged.graph.output.append(base.graph.output[0])
        onnx.save(merged, out)
        return True
    except Exception:  # any failure: the caller converts the whole model
        return False


def _quantized(where, opened, path, images, width, check, parts=None, embedding=False, tmp=None):
    """The deployable model in int8: the run's own int8 network joined with its head (``parts``), or
    else the fp32 ``path`` quantized as the run's extractor was (the same calibration images and
    method, :func:`smallvision.runtime.quantize_onnx`). The check gains how its decisions and
    probabilities compare with the float32 model's on the check images (reported, not a limit:
    int8 differs from float32 by design; the run's own figures were measured in int8)."""
    from .data.imagefile import read_image
    from .runtime import OnnxRunner, quantize_onnx, run_batches
    from .strategies.features import calibration_choice
    int8 = os.path.join(os.path.dirname(path), "model-int8.onnx")
    chosen = calibration_choice(_train_shas(where))
    if parts is None or not _join(parts[1], parts[2], int8, images, embedding, tmp):
        rows = [r for r in where.run.read_csv("index.csv") if r["split"] == "train"]
        calib = np.stack([read_image(os.path.join(where.run.config.data, rows[i]["path"]), opened.spec)[0]
                          for i in chosen])
        quantize_onnx(path, int8, calib, where.model_path)
    q = compare(run_batches(OnnxRunner(int8), images), run_batches(OnnxRunner(path), images), width)
    check = dict(check, int8_vs_fp32={"max_difference": q["max_difference"], "differing": q["differing"],
                                      "calibration_images": len(chosen),
                                      "made": "the run's int8 network + head, joined" if parts else "quantized"})
    return int8, check


def labels_file(opened, where, format, tensor_dtype, check, **more):
    """The :class:`~smallvision.labelsfile.LabelsFile` of a model made from ``where`` (no path of
    this machine: the source is named by its file name, its run folder's name and its sha256)."""
    from .runtime import FORMATS
    spec = opened.spec
    return LabelsFile(format=format, model_file=FORMATS[format].model_file, class_names=tuple(opened.class_names),
                      height=spec.height, width=spec.width, crop_to_aspect=bool(spec.crop_to_aspect), decode=spec.key,
                      dtype=tensor_dtype,
                      source={"model": os.path.basename(where.model_path), "sha256": sha256_file(where.model_path),
                              "run": where.run.name if where.run is not None else None},
                      check=check, versions=versions(), **more)


def versions():
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for name in ("smallvision", "keras", "tensorflow-cpu", "tensorflow", "tf2onnx", "onnxruntime", "openvino",
                 "opencv-python-headless", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out
