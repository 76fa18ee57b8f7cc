"""Running a network nobody trains — a frozen conv base, a finished model — fast on a CPU.

Every frozen forward pass of smallvision (feature extraction, the cached augmented views,
``predict``) goes through :func:`frozen_runner`: the Keras model is exported once to ONNX (Keras'
own ``model.export(format="onnx")``), cached under ``<cache root>/onnx/<key>.onnx``, and run
with ONNX Runtime. Why ONNX Runtime (bench/RESULTS.md §7, measured side by side on this 2-core
CPU, Lite0 at 224 px): 2.8-3.0x the images/s of Keras-TF ``predict_on_batch`` with features
equal to 1e-5, 114 MB installed with its converter (OpenVINO: 0.86x ONNX Runtime's speed,
180 MB), a 0.5 s start, and the same file runs under every Keras backend.

Keras stays the fallback: ``SMALLVISION_RUNTIME=keras`` (or ``--runtime keras``) forces it,
and ``auto`` (the default) falls back with one line saying why when ONNX Runtime is not
installed or a model does not export. An export is checked against Keras on a probe batch
before it is cached; a mismatch is never used. With ``auto``, a model that is not exported
yet is exported only when the work is large enough to repay the export (a few seconds):
:data:`EXPORT_PAYS_OFF` images or more.

The end of this module describes each format ``smallvision export`` writes in one record
(:class:`Format`: its file, Keras' name for it, what it needs, its runner) and opens an export
folder for ``predict`` (:func:`open_export`).
"""
import contextlib
import dataclasses
import functools
import io
import os
import uuid
import warnings

import numpy as np

from .errors import SmallvisionError
from .progress import log

RUNTIMES = ("auto", "onnxruntime", "keras")
EXPORT_PAYS_OFF = 256  # images: below this, exporting (~7-12 s for Lite0) costs more than Keras' slower passes
TOLERANCE = {"rtol": 1e-3, "atol": 1e-4}  # an export must match Keras to this on the probe batch
BATCH = 32


def chosen():
    """The runtime asked for: ``$SMALLVISION_RUNTIME`` (auto, onnxruntime or keras), default auto."""
    name = os.environ.get("SMALLVISION_RUNTIME", "auto") or "auto"
    if name not in RUNTIMES:
        raise SmallvisionError(f"SMALLVISION_RUNTIME must be one of {', '.join(RUNTIMES)}. Received: {name!r}")
    return name


def choose(name):
    """Use runtime ``name`` from now on in this process (and the processes it starts)."""
    if name not in RUNTIMES:
        raise SmallvisionError(f"runtime must be one of {', '.join(RUNTIMES)}. Received: runtime={name!r}")
    os.environ["SMALLVISION_RUNTIME"] = name


class KerasRunner:
    """``runner(uint8 batch) -> float32 array`` with Keras' ``predict_on_batch`` (one compiled
    call per batch, no dataset iterator)."""

    name = "keras"

    def __init__(self, model):
        self.model = model

    def __call__(self, batch):
        return joined(self.model.predict_on_batch(batch))


def joined(outputs):
    """A model's output as one float32 array: several outputs (a classifier with its embedding,
    :func:`smallvision.novelty.with_embedding`) side by side, each flattened per image."""
    if not isinstance(outputs, (list, tuple)):
        return np.asarray(outputs, dtype=np.float32)
    if len(outputs) == 1:
        return np.asarray(outputs[0], dtype=np.float32)
    return np.concatenate([np.asarray(o, np.float32).reshape(len(o), -1) for o in outputs], axis=1)


class OnnxRunner:
    """The same call on an exported ``.onnx`` file with ONNX Runtime (CPU); several outputs joined."""

    name = "onnxruntime"

    def __init__(self, path):
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else (os.cpu_count() or 1)
        options.log_severity_level = 3
        # no spinning between runs: its busy-waiting threads took the cores from the decoding
        # threads beside them (serve at 16 clients: 68 -> 94-98 images/s; the model alone: the same)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = path
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        first = self.session.get_inputs()[0]
        self.input = first.name
        self.dtype = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32}.get(first.type, np.float32)

    def __call__(self, batch):
        return joined(self.session.run(None, {self.input: np.asarray(batch).astype(self.dtype, copy=False)}))


def run_batches(runner, images, batch_size=BATCH):
    """``runner`` over ``images`` (an array) in batches, concatenated."""
    if len(images) == 0:
        return np.zeros((0,), dtype=np.float32)
    return np.concatenate([runner(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def cache_path(key):
    from .data.cache import default_cache_root
    return os.path.join(default_cache_root(), "onnx", f"{key}.onnx")


def model_key(path):
    """A cache key for a saved model file: its content's sha256 and the Keras version."""
    import keras

    from ._io import sha256_file
    return f"model-{sha256_file(path)[:16]}-keras{keras.__version__}"


def frozen_runner(model, key, count=None, what=None):
    """A runner for ``model`` (a Keras model that nobody trains any more).

    Args:
        model: the Keras model (uint8 or float images in), or a function that builds it: then it
            is built only when needed (Keras runs it, or it is exported), not for a cached export.
        key: names the exported file in the cache; must change whenever the model's weights,
            input size or structure do (e.g. backbone, weights file hash, size, Keras version).
        count: how many images the caller is about to run (None: many); with ``auto``, a
            model not yet exported is exported only when this reaches :data:`EXPORT_PAYS_OFF`.
        what: how to name the model in the one-line notes (default: its name).
    """
    mode = chosen()
    get = model if not hasattr(model, "predict_on_batch") else (lambda: model)
    what = what or getattr(model, "name", key)
    if mode == "keras":
        return KerasRunner(get())
    path = cache_path(key)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return _fallback(get, mode, what, "onnxruntime is not installed (pip install onnxruntime tf2onnx)")
    if not os.path.isfile(path):
        if mode == "auto" and count is not None and count < EXPORT_PAYS_OFF:
            return KerasRunner(get())
        try:
            export_onnx(get(), path)
        except ExportError as e:
            return _fallback(get, mode, what, str(e))
    try:
        return OnnxRunner(path)
    except Exception as e:  # a damaged cache file: drop it, the next run exports again
        with contextlib.suppress(OSError):
            os.unlink(path)
        return _fallback(get, mode, what, f"{path}: cannot be loaded ({type(e).__name__}: {str(e)[:200]})")


INT8_FAITHFUL = {"median": 0.98, "min": 0.9}  # cosine of int8 to fp32 outputs on the calibration images


def int8_runner(model, key, calibration, what=None):
    """A runner for ``model`` quantized to int8 (ONNX Runtime static quantization: QDQ, int8
    weights per channel, uint8 activations, min-max ranges) from its float32 export (``key``, as
    :func:`frozen_runner`), calibrated on ``calibration`` = ``(uint8 images, tag)``; cached under
    ``<key>-int8-<tag>``. Measured on Lite0 (bench/RESULTS.md §15): 2.1-2.35x the images/s, the
    same test accuracy to 0.05 point. Refused in one line when its outputs are not faithful to
    float32 (:data:`INT8_FAITHFUL`) or ONNX Runtime is not there."""
    what = what or key
    if chosen() == "keras":
        raise SmallvisionError(f"{what}: precision int8 runs on ONNX Runtime, not with --runtime keras")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise SmallvisionError(f"{what}: precision int8 needs onnxruntime (pip install onnxruntime tf2onnx)") from None
    images, tag = calibration
    fp32, path = cache_path(key), cache_path(f"{key}-int8-{tag}")
    if not os.path.isfile(path):
        if not os.path.isfile(fp32):
            try:
                export_onnx(model() if not hasattr(model, "predict_on_batch") else model, fp32)
            except ExportError as e:
                raise SmallvisionError(f"{what}: {e}; precision int8 needs its ONNX export") from None
        quantize_onnx(fp32, path, images, what)
    return OnnxRunner(path)


def quantize_onnx(src, dst, images, what="the model"):
    """Write ``src`` quantized to int8 at ``dst`` (atomically), calibrated on ``images``, after
    checking its outputs against ``src``'s on them (cosine, :data:`INT8_FAITHFUL`)."""
    import logging

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    folder = os.path.dirname(dst)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex[:12]}")
    source = OnnxRunner(src)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{source.input: images[i:i + 16].astype(source.dtype)}
                                 for i in range(0, len(images), 16)])

        def get_next(self):
            return next(self.batches, None)

    level = logging.getLogger().level
    try:
        logging.getLogger().setLevel(logging.ERROR)
        sink = io.StringIO()
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            quant_pre_process(src, tmp + "-pre.onnx", skip_symbolic_shape=True)
            quantize_static(tmp + "-pre.onnx", tmp + ".onnx", Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=int8_saturates(), activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8)
        want, got = run_batches(source, images), run_batches(OnnxRunner(tmp + ".onnx"), images)
        want, got = want.reshape(len(want), -1), got.reshape(len(got), -1)
        cos = (want * got).sum(1) / np.maximum(np.linalg.norm(want, axis=1) * np.linalg.norm(got, axis=1), 1e-12)
        if not (np.median(cos) >= INT8_FAITHFUL["median"] and cos.min() >= INT8_FAITHFUL["min"]):
            raise SmallvisionError(f"{what}: its int8 quantization is not faithful (cosine to float32: median "
                                   f"{np.median(cos):.3f}, min {cos.min():.3f} on {len(images)} training images); "
                                   "use precision fp32")
        os.replace(tmp + ".onnx", dst)
    finally:
        logging.getLogger().setLevel(level)
        for leftover in (tmp + "-pre.onnx", tmp + ".onnx"):
            with contextlib.suppress(OSError):
                os.unlink(leftover)


def int8_saturates(flags=None, machine=None):
    """Whether this CPU's int8 kernels can saturate: an x86 CPU without VNNI (AVX2, or AVX-512
    without VNNI) multiplies uint8 by int8 with ``vpmaddubsw``, whose 16-bit sums overflow; ONNX
    Runtime's advice is then 7-bit weights (``reduce_range``). Measured on Lite0 at 224 px on an
    AVX2 CPU (bench/RESULTS.md §17, 256 validation photos): the full range gives a median cosine
    to float32 of 0.931 (min 0.685), 7-bit weights 0.980 (min 0.924). ``flags``/``machine``:
    /proc/cpuinfo's flags and the architecture (default: this machine's)."""
    import platform
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i386", "i686"):
        return False
    flags = _cpu_flags() if flags is None else flags
    if flags is None:  # not Linux: no way to tell here; the faithfulness check still guards
        return False
    return not ({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags))


@functools.lru_cache(maxsize=1)
def _cpu_flags():
    """This CPU's flags from /proc/cpuinfo (read once), or None where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            return tuple(next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), ())) or None
    except OSError:
        return None


class ExportError(Exception):
    """The model cannot be exported to ONNX, or the export does not match Keras."""


def export_onnx(model, path, probe=None):
    """Export ``model``'s inference graph (without augmentation layers) to ONNX at ``path``
    (atomically, for the cache of frozen networks), after checking that ONNX Runtime gives what the Keras model itself gives on
    ``probe`` (default: a fixed random uint8 batch) to :data:`TOLERANCE`."""
    import keras
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex[:12]}.onnx")
    if probe is None:
        shape = tuple(model.input_shape[1:])
        probe = np.random.default_rng(0).integers(0, 256, size=(2,) + shape).astype(np.uint8)
    try:
        expected = np.asarray(model.predict_on_batch(probe), dtype=np.float32)  # also: a model must have been called
        if keras.config.dtype_policy().name != "float32":
            raise ExportError(f"the dtype policy is {keras.config.dtype_policy().name}; ONNX export needs float32")
        convert(model, tmp, "onnx", probe)
        got = OnnxRunner(tmp)(probe)
        if got.shape != expected.shape or not np.allclose(got, expected, **TOLERANCE):
            diff = f"max |diff| {np.abs(got - expected).max():.3g}" if got.shape == expected.shape else \
                f"output shape {got.shape} != {expected.shape}"
            raise ExportError(f"the ONNX export differs from Keras ({diff})")
        os.replace(tmp, path)
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"cannot export to ONNX ({type(e).__name__}: {_first_line(e)})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def convert(model, path, format, probe):
    """Keras' own ``model.export`` of ``model``'s inference graph (augmentation layers, the identity
    outside training, dropped: they break the ONNX and LiteRT converters), called once on
    ``probe`` first (the exporters need a called model: a model just loaded from ``model.keras``
    is built but, under JAX, not called); the converters' chatter silenced, their errors one
    :class:`ExportError` line."""
    from .models.walk import inference_graph
    try:
        graph = inference_graph(model)
        graph(probe[:1], training=False)  # __call__ (predict does not mark a model called under JAX)
        sink = io.StringIO()
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            graph.export(path, format=FORMATS[format].keras_format, verbose=False)
    except Exception as e:  # the converters' errors are many and long: one line
        raise ExportError(f"cannot export to {format} ({type(e).__name__}: {_first_line(e)})") from None


def _first_line(e):
    return str(e).splitlines()[0][:300] if str(e) else ""


def _fallback(get, mode, what, why):
    if mode == "onnxruntime":
        raise SmallvisionError(f"{what}: {why}")
    log(f"note: {what}: {why}; running it with Keras instead (slower, same results)")
    return KerasRunner(get())


# -- exported models (``smallvision export``): each format in its own runtime -------------------

class OpenVinoRunner:
    """``runner(uint8 batch) -> float32 array`` with OpenVINO (CPU), computing in float32: on a
    processor with bfloat16 units (AMX, AVX-512 BF16) OpenVINO's CPU plugin otherwise computes in
    bfloat16 by default (measured: |Δp| 0.006 against the Keras model on such a CPU)."""

    name = "openvino"

    def __init__(self, path):
        import openvino as ov
        self.model = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        self.dtype = np.dtype(self.model.inputs[0].get_element_type().to_dtype())

    def __call__(self, batch):
        return np.asarray(self.model(np.asarray(batch).astype(self.dtype, copy=False))[0], dtype=np.float32)


class SavedModelRunner:
    """The same with TensorFlow's SavedModel (its ``serve`` signature, as Keras exports it)."""

    name = "tensorflow"

    def __init__(self, path):
        import tensorflow as tf
        self.tf = tf
        self.model = tf.saved_model.load(path)
        spec = self.model.serve.concrete_functions[0].structured_input_signature[0][0] \
            if hasattr(self.model.serve, "concrete_functions") and self.model.serve.concrete_functions else None
        self.dtype = spec.dtype if spec is not None else tf.float32  # a tf.DType (.as_numpy_dtype)

    def __call__(self, batch):
        return np.asarray(self.model.serve(self.tf.constant(np.asarray(batch), dtype=self.dtype)), dtype=np.float32)


class LiteRtRunner:
    """The same with the LiteRT (TF Lite) interpreter: the input resized to each batch."""

    name = "litert"

    def __init__(self, path):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            import tensorflow as tf
            Interpreter = tf.lite.Interpreter
        self.interpreter = Interpreter(model_path=path)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.dtype = np.dtype(self.input["dtype"])
        self.size = None

    def __call__(self, batch):
        batch = np.asarray(batch).astype(self.input["dtype"], copy=False)
        if self.size != len(batch):
            self.interpreter.resize_tensor_input(self.input["index"], batch.shape)
            self.interpreter.allocate_tensors()
            self.size = len(batch)
        self.interpreter.set_tensor(self.input["index"], batch)
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self.output["index"]), dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class Format:
    """One format ``smallvision export`` writes: everything particular to it, in one place."""

    name: str
    model_file: str  # in the export folder
    keras_format: str  # Keras' name for it in ``model.export(format=...)``
    needs: tuple  # modules its conversion and its runtime import
    install: str  # what to pip install for them
    runner: type  # ``runner(model file)`` -> a runner in the format's own runtime


FORMATS = {f.name: f for f in (
    Format("onnx", "model.onnx", "onnx", ("onnxruntime", "tf2onnx", "tensorflow"),
           "onnxruntime tf2onnx tensorflow-cpu", OnnxRunner),
    Format("openvino", "model.xml", "openvino", ("openvino", "tensorflow"), "openvino", OpenVinoRunner),
    Format("saved_model", "saved_model", "tf_saved_model", ("tensorflow",), "tensorflow-cpu", SavedModelRunner),
    Format("litert", "model.tflite", "litert", ("tensorflow",), "tensorflow-cpu", LiteRtRunner),
)}


def open_runner(path, format):
    """A runner for the exported model file ``path`` in its own runtime."""
    return FORMATS[format].runner(path)


@dataclasses.dataclass
class Exported:
    """An export folder (or its model file) opened for classifying: a runner, the class names
    and the decoding, read from labels.json."""

    runner: object
    class_names: list
    spec: object  # DecodeSpec
    source: str
    format: str
    novelty: object = None  # novelty.Novelty when the model has the embedding output and novelty.npz is beside it
    width: int = 0  # the classifier's output columns

    def outputs(self, out):
        """``(probabilities, [(novelty, unknown)] or None)`` from what its runner returned."""
        from .novelty import split
        return split(out, len(self.class_names), self.width, self.novelty)

    @property
    def description(self):
        return f"{self.source} ({self.spec.height}x{self.spec.width})"


def is_export(source):
    """True for an export folder (labels.json inside) or a model file with labels.json beside it."""
    from .labelsfile import in_folder
    source = os.fspath(source)
    folder = source if os.path.isdir(source) else os.path.dirname(os.path.abspath(source))
    return in_folder(folder) and not os.path.isfile(os.path.join(folder, "config.json"))


def open_export(source):
    """An export folder or its model file -> :class:`Exported`; a one-line error naming what is wrong."""
    from .data.decode import DecodeSpec
    from .labelsfile import NAME, LabelsFile
    source = os.fspath(source)
    folder = source if os.path.isdir(source) else os.path.dirname(os.path.abspath(source))
    labels_path = os.path.join(folder, NAME)
    labels = LabelsFile.read(folder, {f.name: f.model_file for f in FORMATS.values()})
    fmt, names = labels.format, list(labels.class_names)
    if fmt not in FORMATS or len(names) < 2:
        raise SmallvisionError(f"{labels_path}: format {fmt!r} and {len(names)} class names: cannot use it")
    spec = DecodeSpec(labels.height, labels.width, labels.crop_to_aspect)
    if spec.key != (labels.decode or spec.key):
        raise SmallvisionError(f"{labels_path}: made with decoding {labels.decode}, this smallvision decodes "
                               f"{spec.key}; export the run again")
    model_path = os.path.join(folder, FORMATS[fmt].model_file)
    if not os.path.exists(model_path):
        raise SmallvisionError(f"{model_path}: missing (labels.json says format {fmt})")
    try:
        runner = open_runner(model_path, fmt)
    except ImportError as e:
        raise SmallvisionError(f"{model_path}: needs {e.name or e} to run (pip install {FORMATS[fmt].install})") \
            from None
    except Exception as e:
        raise SmallvisionError(f"{model_path}: cannot be loaded ({type(e).__name__}: {str(e)[:200]})") from None
    from .labels import is_binary
    from .novelty import Novelty
    novelty = Novelty.load(folder) if labels.embedding else None
    return Exported(runner, names, spec, model_path, fmt, novelty, 1 if is_binary(len(names)) else len(names))
