"""Taking a trained model out of the tool: ``export`` writes it in a format people deploy, with
``labels.json`` and a reference client ``predict.py`` beside it, and proves both classify like
the run before it says done (``runtime.open_export`` opens such a folder again: ``predict`` on
an ONNX export needs no TensorFlow).

::

    <run>/export/<format>/        (--out DIR)
      model.onnx | model.xml + model.bin | saved_model/ | model.tflite
      labels.json                 class names in output order, the input (size, uint8 RGB,
                                  NHWC, the decoding steps), what the output means, the
                                  source model's sha256, the parity check's figures
      predict.py                  smallvision/client.py: NumPy + OpenCV + the format's runtime
      novelty.npz                 (onnx, from a run that has it: output 1 is the embedding)

Formats are Keras' own ``model.export`` (``onnx`` through tf2onnx on TensorFlow,
``openvino``, ``saved_model`` = ``tf_saved_model``, ``litert``), applied to the model's
inference graph (augmentation layers, the identity outside training, are dropped: they break
the ONNX and LiteRT converters, keras#21346 / keras#19108) under the float32 policy. ONNX
from a run folder is the run's own ``model.onnx`` (:mod:`smallvision.deploy`, checked when it
was written). Each other export is loaded in its own runtime (OpenVINO, TensorFlow, the LiteRT
interpreter) and run on real images of the run's validation split beside the Keras model; a
difference beyond :data:`TOLERANCE` is an error and the files are removed. Then ``predict.py``
runs in a separate process on those image files and must agree with smallvision's own
decoding through the same file (:func:`check_client`).
"""
import dataclasses
import os
import shutil
import uuid

import numpy as np

from . import deploy
from .errors import SmallvisionError
from .novelty import FILE as NOVELTY
from .runtime import FORMATS, ExportError, KerasRunner, convert, open_runner, run_batches

CHECK_IMAGES = deploy.CHECK_IMAGES
TOLERANCE = deploy.TOLERANCE

CLIENT = "predict.py"  # the reference client (smallvision/client.py), in every export folder


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
    client_checked: int = 0  # image files predict.py classified in the check
    client_difference: float = 0.0  # max |probability difference| of predict.py against smallvision

    def describe(self):
        return (f"exported {self.format} to {self.model_path}; checked on {self.checked} {self.check_images} images "
                f"against the Keras model: max |Δprobability| {self.max_difference:.2e}, "
                f"{self.differing} differing decisions; {CLIENT} on {self.client_checked} files: max |Δprobability| "
                f"{self.client_difference:.2e}, same decisions")


def export(source, format="onnx", out=None, check_images=CHECK_IMAGES, progress=True):
    """Export a run's model (or a ``.keras`` file) to ``format`` under ``out`` (default
    ``<run>/export/<format>``, or ``<file>-<format>/`` beside a bare model file), with
    ``labels.json`` and the reference client ``predict.py``, after checking it against the Keras
    model on up to ``check_images`` images of the run's validation split, and the client against
    smallvision on those image files. ONNX from a run reuses the run's own ``model.onnx``
    (:mod:`smallvision.deploy`; made now if the run has none), with its ``novelty.npz``.
    Returns an :class:`ExportResult`.
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
    own = where.run is not None and os.path.samefile(where.model_path, where.run.model_path)
    if out is None:
        out = os.path.join(where.run.path, "export", format) if own else \
            os.path.splitext(where.model_path)[0] + f"-{format}"
    out = os.fspath(out)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".tmp-export-{uuid.uuid4().hex[:12]}")
    os.makedirs(tmp)
    model_file = FORMATS[format].model_file
    try:
        if format == "onnx" and own:
            labels = deploy.current(where.run.path, where.model_path) or deploy.write(where, _load(where), check_images)
            shutil.copyfile(where.run.file(deploy.ONNX), os.path.join(tmp, model_file))
            if labels.embedding and os.path.isfile(where.run.file(NOVELTY)):
                shutil.copyfile(where.run.file(NOVELTY), os.path.join(tmp, NOVELTY))
            check = labels.check
        else:
            labels, check = _convert(where, _load(where), format, os.path.join(tmp, model_file), check_images)
        labels.write(tmp)
        shutil.copyfile(client_source(), os.path.join(tmp, CLIENT))
        checked, client_diff = check_client(tmp, where, check_images)
        if os.path.exists(out):  # a new export replaces the old one whole
            shutil.rmtree(out) if os.path.isdir(out) else os.unlink(out)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(out, os.path.join(out, model_file), format, check["images"], check["kind"],
                        check["max_difference"], check["differing"], checked, client_diff)


def _convert(where, opened, format, path, limit):
    """The model in ``format`` at ``path``, checked against Keras: ``(its LabelsFile, the check)``."""
    expected_images, _, kind = deploy.check_images(where, opened.spec, limit)
    expected = run_batches(KerasRunner(opened.model), expected_images)
    try:
        convert(opened.model, path, format, expected_images)
    except ExportError as e:
        raise SmallvisionError(f"{where.model_path}: {e}") from None
    runner = open_runner(path, format)
    check = deploy.compare(run_batches(runner, expected_images), expected, None)
    check.update(images=len(expected_images), kind=kind, tolerance=deploy.TOLERANCE)
    if not check["max_difference"] <= deploy.TOLERANCE:
        raise SmallvisionError(f"{where.model_path}: the {format} export differs from the Keras model on "
                               f"{kind} images (max |Δprobability| {check['max_difference']:.3g} > "
                               f"{deploy.TOLERANCE:g}, {check['differing']} differing decisions); nothing was written")
    return deploy.labels_file(opened, where, format, _input_dtype(runner), check), check


def client_source():
    """The file every export carries as predict.py."""
    from . import client
    return client.__file__


def check_client(folder, where, limit):
    """Run the export's own ``predict.py`` (a separate process, no smallvision) on up to ``limit``
    of the run's validation image files (a bare model file: random PNG files) and compare it with
    smallvision's decoding through the same model file: ``(files, max |Δprobability|)``; any
    difference in a decision, or beyond :data:`~smallvision.deploy.TOLERANCE`, is an error."""
    import subprocess
    import sys
    import tempfile

    from .runtime import open_export
    exported = open_export(folder)
    images, paths, _ = deploy.check_images(where, exported.spec, limit)
    with tempfile.TemporaryDirectory() as scratch:
        if not paths:
            import cv2
            paths = []
            for k, image in enumerate(images):
                paths.append(os.path.join(scratch, f"random-{k}.png"))
                cv2.imwrite(paths[-1], image[:, :, ::-1])
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        out = subprocess.run([sys.executable, "-I", os.path.join(folder, CLIENT), *paths], capture_output=True,
                             text=True, env=env, cwd=scratch)
    lines = [line.split("\t") for line in out.stdout.splitlines()]
    if out.returncode != 0 or len(lines) != len(paths):
        raise SmallvisionError(f"{os.path.join(folder, CLIENT)}: failed on the check images (exit {out.returncode}: "
                               f"{(out.stderr.strip().splitlines() or [''])[-1][:300]}); nothing was written")
    probs = exported.outputs(run_batches(exported.runner, images))[0]
    names = list(exported.class_names)
    worst = 0.0
    for (path, name, p), want in zip(lines, probs):
        k = int(np.argmax(want))
        if name != names[k]:
            raise SmallvisionError(f"{os.path.join(folder, CLIENT)}: {path} is {name} there and {names[k]} in "
                                   "smallvision; nothing was written")
        worst = max(worst, abs(float(p) - float(want[k])))
    if not worst <= deploy.TOLERANCE:
        raise SmallvisionError(f"{os.path.join(folder, CLIENT)}: differs from smallvision by {worst:.3g} > "
                               f"{deploy.TOLERANCE:g}; nothing was written")
    return len(paths), worst


def _input_dtype(runner):
    return np.dtype(getattr(runner.dtype, "as_numpy_dtype", runner.dtype)).name
