"""Taking a trained model out of the tool: ``export`` writes it in a format people deploy, with
``labels.json`` beside it, and proves the file classifies like the run's Keras model before
it says done (``runtime.open_export`` opens such a folder again: ``predict`` on an ONNX
export needs no TensorFlow).

::

    <run>/export/<format>/        (--out DIR)
      model.onnx | model.xml + model.bin | saved_model/ | model.tflite
      labels.json                 class names in output order, the input (size, uint8 RGB,
                                  NHWC, how images were resized), what the output means,
                                  the source model's sha256, the parity check's figures

Formats are Keras' own ``model.export`` (``onnx`` through tf2onnx on TensorFlow,
``openvino``, ``saved_model`` = ``tf_saved_model``, ``litert``), applied to the model's
inference graph (augmentation layers, the identity outside training, are dropped: they break
the ONNX and LiteRT converters, keras#21346 / keras#19108) under the float32 policy. Each
export is then loaded in its own runtime (ONNX Runtime, OpenVINO, TensorFlow, the LiteRT
interpreter) and run on real images of the run's validation split beside the Keras model;
a difference beyond :data:`TOLERANCE` is an error and the files are removed.
"""
import dataclasses
import os
import shutil
import uuid

import numpy as np

from ._io import sha256_file
from .errors import SmallvisionError
from .labelsfile import LabelsFile
from .runtime import FORMATS, ExportError, KerasRunner, convert, open_runner

TOLERANCE = 1e-4  # max |difference| of any class probability against the Keras model
CHECK_IMAGES = 256  # validation images the parity check runs (all of them when fewer)


def _require(fmt):
    import importlib.util
    missing = [m for m in FORMATS[fmt].needs if importlib.util.find_spec(m) is None]
    if missing:
        raise SmallvisionError(f"export --format {fmt} needs {', '.join(missing)} (pip install {FORMATS[fmt].install})")


@dataclasses.dataclass
class ExportResult:
    """What :func:`export` wrote and what its check measured."""

    folder: str
    model_path: str
    format: str
    checked: int  # images the export was compared on
    check_images: str  # "validation" (the run's) or "random" (a bare model file has none)
    max_difference: float  # max |probability difference| against the Keras model
    differing: int  # images whose predicted class differs

    def describe(self):
        return (f"exported {self.format} to {self.model_path}; checked on {self.checked} {self.check_images} images "
                f"against the Keras model: max |Δprobability| {self.max_difference:.2e}, "
                f"{self.differing} differing decisions")


def export(source, format="onnx", out=None, check_images=CHECK_IMAGES, progress=True):
    """Export a run's model (or a ``.keras`` file) to ``format`` under ``out`` (default
    ``<run>/export/<format>``, or ``<file>-<format>/`` beside a bare model file), with
    ``labels.json``, after checking it against the Keras model on up to ``check_images``
    images of the run's validation split. Returns an :class:`ExportResult`.
    """
    import keras

    from .checks import check_positive
    from .inference import _load
    from .runs import resolve_model

    check_images = check_positive("check_images", check_images, integer=True)
    if format not in FORMATS:
        raise SmallvisionError(f"export format must be one of {', '.join(FORMATS)}. Received: format={format!r}")
    where = resolve_model(source)
    _require(format)
    if keras.config.dtype_policy().name != "float32":
        raise SmallvisionError(f"export needs the float32 dtype policy (it is {keras.config.dtype_policy().name})")
    opened = _load(where)
    if out is None:
        out = os.path.join(where.run.path, "export", format) if where.run is not None and \
            os.path.samefile(where.model_path, where.run.model_path) else \
            os.path.splitext(where.model_path)[0] + f"-{format}"
    out = os.fspath(out)
    images, kind = _check_images(where, opened, check_images)
    expected = _probabilities(KerasRunner(opened.model), images, len(opened.class_names))

    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".tmp-export-{uuid.uuid4().hex[:12]}")
    os.makedirs(tmp)
    model_file = FORMATS[format].model_file
    try:
        try:
            convert(opened.model, os.path.join(tmp, model_file), format, images)
        except ExportError as e:
            raise SmallvisionError(f"{where.model_path}: {e}") from None
        runner = open_runner(os.path.join(tmp, model_file), format)
        got = _probabilities(runner, images, len(opened.class_names))
        diff = float(np.abs(got - expected).max()) if len(images) else 0.0
        differing = int((got.argmax(1) != expected.argmax(1)).sum())
        if not diff <= TOLERANCE:
            raise SmallvisionError(f"{where.model_path}: the {format} export differs from the Keras model on "
                                   f"{kind} images (max |Δprobability| {diff:.3g} > {TOLERANCE:g}, {differing} "
                                   "differing decisions); nothing was written")
        labels_file(opened, where, format, _input_dtype(runner),
                    dict(images=len(images), kind=kind, max_difference=diff, differing=differing,
                         tolerance=TOLERANCE)).write(tmp)
        if os.path.exists(out):  # a new export replaces the old one whole
            shutil.rmtree(out) if os.path.isdir(out) else os.unlink(out)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(out, os.path.join(out, model_file), format, len(images), kind, diff, differing)


def _input_dtype(runner):
    return np.dtype(getattr(runner.dtype, "as_numpy_dtype", runner.dtype)).name


def labels_file(opened, where, format, tensor_dtype, check):
    """The :class:`~smallvision.labelsfile.LabelsFile` of an export (no path of this machine: the
    source is named by its file name, its run folder's name and its sha256)."""
    spec = opened.spec
    return LabelsFile(format=format, model_file=FORMATS[format].model_file, class_names=tuple(opened.class_names),
                      height=spec.height, width=spec.width, crop_to_aspect=bool(spec.crop_to_aspect), decode=spec.key,
                      dtype=tensor_dtype,
                      source={"model": os.path.basename(where.model_path), "sha256": sha256_file(where.model_path),
                              "run": where.run.name if where.run is not None else None},
                      check=check, versions=_versions())


def _versions():
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for name in ("smallvision", "keras", "tensorflow-cpu", "tensorflow", "tf2onnx", "onnxruntime", "openvino"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def _check_images(where, opened, limit):
    """Up to ``limit`` images of the run's validation split (test when it has none), decoded as in
    training; a bare model file has neither: a fixed random batch."""
    from .data.decode import BadImage
    from .data.imagefile import read_image
    if where.run is not None:
        rows = where.run.read_csv("index.csv")
        data = where.run.config.data
        for split in ("validation", "test"):
            paths = [os.path.join(data, r["path"]) for r in rows if r["split"] == split][:limit]
            images = []
            for path in paths:
                try:
                    images.append(read_image(path, opened.spec)[0])
                except (BadImage, OSError):
                    continue
            if images:
                return np.stack(images), split
    shape = (min(limit, 16), opened.spec.height, opened.spec.width, 3)
    return np.random.default_rng(0).integers(0, 256, size=shape).astype(np.uint8), "random"


def _probabilities(runner, images, n):
    from .labels import as_probabilities
    from .runtime import run_batches
    return as_probabilities(run_batches(runner, images), n)
