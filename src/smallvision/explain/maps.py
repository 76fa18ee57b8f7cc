"""Pictures: a kernel applied to an image, feature maps per conv layer, Grad-CAM heatmaps.

Pictures are drawn with Pillow at sizes that follow from the inputs (no plotting library
layout), so they are quick and their dimensions are predictable.
"""
import numpy as np
from PIL import Image, ImageDraw, ImageOps

from .._io import write_png
from ..labels import as_probabilities, class_score, classes_of
from .conv import conv2d

GAP = 4
LABEL_WIDTH = 150  # room for "block15_project_conv"


def _png(image, path):
    write_png(image, path)
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
    from ..data.imagefile import read_file
    from ..errors import SmallvisionError
    try:
        im = ImageOps.exif_transpose(open_image(read_file(path))).convert("L")
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


MAX_ALL_LAYERS = 8  # up to this many conv layers are all shown; more: the last of each resolution


def feature_layers(model):
    """The conv layers whose maps are worth looking at, and a sentence saying which.

    A small net (the chapter's: 5 conv layers) shows every one; a deep pretrained base (Lite0:
    65) shows the last convolution at each resolution, where each stage of the spatial
    hierarchy ends.
    """
    from ..models.walk import conv_layers
    convs = conv_layers(model)
    if not convs:
        raise ValueError("the model has no convolution layer, so nothing to show")
    if len(convs) <= MAX_ALL_LAYERS:
        return convs, f"all {len(convs)} conv layers"
    chosen = []
    for layer in convs:
        size = tuple(layer.output.shape[1:3])
        if chosen and tuple(chosen[-1].output.shape[1:3]) == size:
            chosen[-1] = layer
        else:
            chosen.append(layer)
    return chosen, (f"the last conv layer at each of {len(chosen)} resolutions (of {len(convs)} conv layers: "
                    "where each stage of the hierarchy ends)")


def activations(model, image, layers=None):
    """``{layer path: (h, w, channels) activation}`` of ``layers`` (default: :func:`feature_layers`)
    for one uint8 image; nested models (a pretrained base) included."""
    import keras

    from ..models.walk import path_of, split
    layers = layers or feature_layers(model)[0]
    body, _ = split(model, list(layers))
    outs = body(image[None].astype("float32"), training=False)
    return {path_of(model, l): np.asarray(keras.ops.convert_to_numpy(o))[0] for l, o in zip(layers, outs)}


def activation_grid(maps, out_path, per_layer=16, cell=64):
    """One row per conv layer: its ``per_layer`` most active channels. Returns the PNG size."""
    rows = len(maps)
    width = LABEL_WIDTH + per_layer * (cell + GAP)
    canvas = Image.new("L", (width, rows * (cell + GAP)), 255)
    draw = ImageDraw.Draw(canvas)
    for r, (name, a) in enumerate(maps.items()):
        y = r * (cell + GAP)
        zero = float((a <= 0).mean())
        short = name.rsplit("/", 1)[-1]
        draw.text((4, y + 4), f"{short}\n{a.shape[0]}x{a.shape[1]}x{a.shape[2]}\n{zero:.0%} zero", fill=0)
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
    """Grad-CAM over the last convolution layer (inside a nested pretrained base too) for one
    uint8 image.

    Returns:
        ``(heatmap in [0, 1] at the conv layer's resolution, probabilities, class index,
        path of the layer used, e.g. "efficientnet_lite0/top_conv")``.
    For a sigmoid output p, class 1 scores p and class 0 scores 1 - p.
    """
    import keras

    from ..models.walk import conv_layers, path_of, split
    convs = conv_layers(model)
    if not convs:
        raise ValueError("the model has no convolution layer, so no map of where it looked")
    last = convs[-1]
    body, head = split(model, last)
    num_classes = classes_of(model.output_shape[-1])
    fmap = np.asarray(keras.ops.convert_to_numpy(body(image[None].astype("float32"), training=False)))
    probs = as_probabilities(keras.ops.convert_to_numpy(head(fmap, training=False)), num_classes)[0]
    k = int(np.argmax(probs)) if class_index is None else int(class_index)
    _, grads = _value_and_gradient(lambda f: class_score(head(f, training=False), k, num_classes), fmap)
    weights = grads[0].mean(axis=(0, 1))  # one weight per channel: its average gradient
    cam = np.maximum((fmap[0] * weights).sum(axis=-1), 0)
    cam = cam / cam.max() if cam.max() > 0 else cam
    return cam, probs, k, path_of(model, last)


def heatmap_picture(image, cam, out_path, scale=2):
    """Image | image with the heatmap blended in (jet colours), as a PNG file. Returns its size."""
    return _png(heatmap_canvas(image, cam, scale), out_path)


def heatmap_canvas(image, cam, scale=2):
    """Image | image with the heatmap blended in (jet colours), as a PIL image."""
    import matplotlib
    h, w = image.shape[:2]
    heat = Image.fromarray((cam * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
    colours = (matplotlib.colormaps["jet"](np.asarray(heat) / 255.0)[..., :3] * 255).astype(np.uint8)
    blend = (0.55 * image + 0.45 * colours).astype(np.uint8)
    canvas = Image.new("RGB", (2 * w + GAP, h), (255, 255, 255))
    canvas.paste(Image.fromarray(image), (0, 0))
    canvas.paste(Image.fromarray(blend), (w + GAP, 0))
    return canvas.resize((canvas.width * scale, canvas.height * scale), Image.NEAREST)
