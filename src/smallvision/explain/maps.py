"""Pictures: a kernel applied to an image, feature maps per conv layer, Grad-CAM heatmaps.

Pictures are drawn with Pillow at sizes that follow from the inputs (no plotting library
layout), so they are quick and their dimensions are predictable.
"""
import numpy as np
from PIL import Image, ImageDraw, ImageOps

from .._io import write_bytes_atomic
from .conv import conv2d

GAP = 4
LABEL_WIDTH = 120


def _png(image, path):
    import io
    buf = io.BytesIO()
    image.save(buf, "PNG")
    write_bytes_atomic(path, buf.getvalue())
    return image.size


def _to_uint8(a):
    """Min-max scale an array to 0..255 (a constant array becomes mid-grey)."""
    a = np.asarray(a, dtype=np.float64)
    lo, hi = np.nanmin(a), np.nanmax(a)
    if hi - lo < 1e-12:
        return np.full(a.shape, 128, np.uint8)
    return np.clip((a - lo) / (hi - lo) * 255 + 0.5, 0, 255).astype(np.uint8)


def load_grey(path, max_side=512):
    """An image file as a greyscale float array (EXIF applied), at most ``max_side`` pixels wide/high."""
    from ..data.decode import BadImage, open_image
    from ..errors import SmallvisionError
    try:
        with open(path, "rb") as f:
            im = open_image(f.read())
        im = ImageOps.exif_transpose(im).convert("L")
    except (OSError, BadImage) as e:
        raise SmallvisionError(f"{path}: {e}") from None
    im.thumbnail((max_side, max_side))
    return np.asarray(im, dtype=np.float64)


def conv_picture(grey, kernel, out_path, stride=1, padding="valid"):
    """Apply ``kernel`` to a greyscale image; write input | output side by side.

    Returns ``(output array, (width, height) of the PNG)``.
    """
    out = conv2d(grey, kernel, stride=stride, padding=padding)[..., 0]
    left = Image.fromarray(_to_uint8(grey))
    right = Image.fromarray(_to_uint8(out))
    canvas = Image.new("L", (left.width + GAP + right.width, max(left.height, right.height)), 255)
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + GAP, 0))
    return out, _png(canvas, out_path)


def conv_layers(model):
    """The model's Conv2D layers, nested models included, in order."""
    found = []
    for layer in model.layers:
        if getattr(layer, "layers", None):
            found += conv_layers(layer)
        elif type(layer).__name__ in ("Conv2D", "DepthwiseConv2D", "SeparableConv2D"):
            found.append(layer)
    return found


def activations(model, image):
    """{layer name: (h, w, channels) activation} of every conv layer for one uint8 image."""
    import keras
    layers = conv_layers(model)
    probe = keras.Model(model.input, [l.output for l in layers])
    outs = probe.predict(image[None], verbose=0)
    if not isinstance(outs, (list, tuple)):
        outs = [outs]
    return {l.name: np.asarray(o[0]) for l, o in zip(layers, outs)}


def activation_grid(maps, out_path, per_layer=16, cell=64):
    """One row per conv layer: its ``per_layer`` most active channels. Returns the PNG size."""
    rows = len(maps)
    width = LABEL_WIDTH + per_layer * (cell + GAP)
    canvas = Image.new("L", (width, rows * (cell + GAP)), 255)
    draw = ImageDraw.Draw(canvas)
    for r, (name, a) in enumerate(maps.items()):
        y = r * (cell + GAP)
        zero = float((a <= 0).mean())
        draw.text((4, y + 4), f"{name}\n{a.shape[0]}x{a.shape[1]}x{a.shape[2]}\n{zero:.0%} zero", fill=0)
        order = np.argsort(-a.reshape(-1, a.shape[-1]).mean(axis=0))[:per_layer]
        for c, ch in enumerate(order):
            tile = Image.fromarray(_to_uint8(a[..., ch])).resize((cell, cell), Image.NEAREST)
            canvas.paste(tile, (LABEL_WIDTH + c * (cell + GAP), y))
    return _png(canvas, out_path)


def _value_and_gradient(fn, x):
    """``fn(x)`` summed, and its gradient with respect to ``x``, on the active Keras backend."""
    import keras
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        xt = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = fn(xt)
        return np.asarray(y), np.asarray(tape.gradient(y, xt))
    if backend == "torch":
        import torch
        xt = keras.ops.convert_to_tensor(x).detach().requires_grad_(True)
        y = fn(xt)
        (g,) = torch.autograd.grad(y.sum(), xt)
        return y.detach().cpu().numpy(), g.cpu().numpy()
    if backend == "jax":
        import jax
        y, g = jax.value_and_grad(lambda z: fn(z).sum())(x)
        return np.asarray(y), np.asarray(g)
    raise NotImplementedError(f"Grad-CAM needs gradients; backend {backend!r} is not supported")


def grad_cam(model, image, class_index=None):
    """Grad-CAM over the last conv layer for one uint8 image.

    Returns ``(heatmap in [0, 1] at the conv layer's resolution, probabilities, class_index)``.
    For a sigmoid output p, class 1 scores p and class 0 scores 1 - p.
    """
    import keras
    from ..metrics import as_probabilities
    last = conv_layers(model)[-1]
    body = keras.Model(model.input, last.output)
    head = keras.Model(last.output, model.output)
    fmap = np.asarray(keras.ops.convert_to_numpy(body(image[None].astype("float32"), training=False)))
    probs = as_probabilities(keras.ops.convert_to_numpy(head(fmap, training=False)),
                             max(2, model.output_shape[-1]))[0]
    k = int(np.argmax(probs)) if class_index is None else int(class_index)
    binary = model.output_shape[-1] == 1

    def score(c):
        out = head(c, training=False)
        if binary:
            return out[:, 0] if k == 1 else 1.0 - out[:, 0]
        return out[:, k]

    _, grads = _value_and_gradient(score, fmap)
    weights = grads[0].mean(axis=(0, 1))  # one weight per channel: its average gradient
    cam = np.maximum((fmap[0] * weights).sum(axis=-1), 0)
    cam = cam / cam.max() if cam.max() > 0 else cam
    return cam, probs, k


def heatmap_picture(image, cam, out_path, scale=2):
    """Image | image with the heatmap blended in (jet colours). Returns the PNG size."""
    import matplotlib
    h, w = image.shape[:2]
    heat = Image.fromarray((cam * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
    colours = (matplotlib.colormaps["jet"](np.asarray(heat) / 255.0)[..., :3] * 255).astype(np.uint8)
    blend = (0.55 * image + 0.45 * colours).astype(np.uint8)
    canvas = Image.new("RGB", (2 * w + GAP, h), (255, 255, 255))
    canvas.paste(Image.fromarray(image), (0, 0))
    canvas.paste(Image.fromarray(blend), (w + GAP, 0))
    canvas = canvas.resize((canvas.width * scale, canvas.height * scale), Image.NEAREST)
    return _png(canvas, out_path)
