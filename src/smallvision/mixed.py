"""Mixed precision (``--mixed-precision``): training in float16 or bfloat16 on an accelerator.

smallvision does not cast anything itself. It sets Keras' own dtype policy
(``keras.mixed_precision.set_dtype_policy("mixed_float16" | "mixed_bfloat16")``) while a run
builds, loads and trains its models (:func:`scope`): the layers keep float32 variables and
compute in the half type, and the classifier's output layer is float32 always
(:func:`smallvision.models.heads.classifier_output`), as Keras' guide asks. Under
``mixed_float16`` ``Model.compile`` wraps the optimizer in ``LossScaleOptimizer`` (its
``auto_scale_loss``); bfloat16 has float32's range and needs no loss scaling.

* ``auto`` (the default): ``bfloat16`` on a GPU of compute capability 8.0 or more (Ampere,
  Hopper …) and on a TPU, ``float16`` on a GPU of 7.x (Volta, Turing), ``off`` on a CPU —
  where the half types are not faster and, under TensorFlow, partly emulated.
* ``off``, ``float16``, ``bfloat16``: as asked, on any device (``float16`` and ``bfloat16`` on
  a CPU are for trying the path, not for speed).

The run records the resolved mode in config.json (``mixed_precision``); a resume trains on in
it. Whatever trained, the published model (model.keras, and the model every figure in
metrics.json comes from) is float32 (:func:`as_float32`): same weights, float32 arithmetic, so
predict, export and serve are the same as for any run.
"""
import contextlib

from .errors import SmallvisionError

MODES = ("auto", "off", "float16", "bfloat16")
POLICIES = {"off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
MIXED = ("mixed_float16", "mixed_bfloat16")


def parse(value):
    """``--mixed-precision``: None (auto) or one of :data:`MODES` -> that mode; else a one-line error."""
    if value is None:
        return "auto"
    text = str(value).strip().lower()
    text = {"fp16": "float16", "bf16": "bfloat16", "fp32": "off", "float32": "off", "none": "off",
            "mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}.get(text, text)
    if text not in MODES:
        raise SmallvisionError(f"mixed_precision must be one of {', '.join(MODES)}. Received: "
                               f"mixed_precision={value!r}")
    return text


def resolve(value, accelerator=None):
    """The mode a run trains in: ``value`` (:func:`parse`'s), with ``auto`` decided by the
    accelerator (:func:`accelerator`'s ``(kind, compute capability)``; None: looked up)."""
    mode = parse(value)
    if mode != "auto":
        return mode
    kind, capability = accelerator if accelerator is not None else _accelerator()
    if kind == "tpu":
        return "bfloat16"
    if kind == "gpu":
        if capability is None or capability >= (8, 0):
            return "bfloat16"
        return "float16" if capability >= (7, 0) else "off"
    return "off"


def policy(mode):
    """Keras' dtype policy name for a resolved mode."""
    return POLICIES[mode]


@contextlib.contextmanager
def scope(mode):
    """Keras' global dtype policy set to ``mode``'s (a resolved mode) while the block builds,
    loads or trains a model; the previous policy back afterwards. ``off``: nothing changes."""
    if mode in (None, "off"):
        yield
        return
    import keras
    before = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(policy(mode))
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(before)


def is_mixed(model):
    """Whether any layer of ``model`` (nested ones included) computes in another type than its
    variables (a mixed policy)."""
    from .models.walk import leaves
    return any(_policy_name(layer) in MIXED for layer in [model] + leaves(model))


def as_float32(model):
    """``model`` itself when it is float32 throughout; else the same architecture built with
    every layer's policy float32, holding the same weights (the variables of a mixed policy are
    float32 already, so they are copied exactly). The rebuilt model is not compiled (as the
    pretrained strategies' published models are not): it is for predicting, exporting and
    serving; training goes on from the run's checkpoint."""
    import keras
    if not is_mixed(model):
        return model
    config = _float32_config(keras.saving.serialize_keras_object(model))
    config.pop("compile_config", None)
    with scope("off"):
        rebuilt = keras.saving.deserialize_keras_object(config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def saved_mode(path):
    """The mode a saved ``.keras`` model was built in ("off" when its config names no mixed
    policy, or cannot be read): a checkpoint loads in it, so that a ``mixed_float16`` one gets
    its ``LossScaleOptimizer`` (and the loss scale it had) back."""
    import json
    import zipfile
    try:
        with zipfile.ZipFile(path) as z:
            names = set(_mixed_names(json.loads(z.read("config.json"))))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):  # no file, no config, not JSON, not a zip
        return "off"
    return "float16" if "mixed_float16" in names else "bfloat16" if names else "off"


def _policy_name(layer):
    policy_ = getattr(layer, "dtype_policy", None)
    return getattr(policy_, "name", None)


def _mixed_names(node):
    """The mixed policy names anywhere in a serialized config."""
    if isinstance(node, dict):
        node = list(node.values())
    if isinstance(node, list):
        for value in node:
            yield from _mixed_names(value)
    elif node in MIXED:
        yield node


def _float32_config(node):
    """A serialized model's config with every mixed policy name made float32 (in a
    DTypePolicy's config, or a policy serialized as its name)."""
    if isinstance(node, dict):
        return {k: _float32_config(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_float32_config(v) for v in node]
    return "float32" if node in MIXED else node


def _accelerator():
    """``(kind, compute capability or None)`` of the backend's first device: kind "gpu",
    "tpu" or "cpu"."""
    import keras
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax
            device = jax.devices()[0]
            kind = {"cuda": "gpu", "rocm": "gpu"}.get(device.platform, device.platform)
            capability = getattr(device, "compute_capability", None)
            return kind, _capability(capability) if kind == "gpu" else None
        if backend == "torch":
            import torch
            if torch.cuda.is_available():
                return "gpu", tuple(torch.cuda.get_device_capability(0))
            return "cpu", None
        if backend == "tensorflow":
            import tensorflow as tf
            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                return "gpu", _capability(details.get("compute_capability"))
            return ("tpu", None) if tf.config.list_logical_devices("TPU") else ("cpu", None)
    except Exception:  # a device that cannot be asked trains in float32
        return "cpu", None
    return "cpu", None


def _capability(value):
    """(major, minor) from "9.0", (9, 0) or None."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.split(".")
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    return tuple(int(v) for v in value)[:2]
