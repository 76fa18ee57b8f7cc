"""The ``explain`` verbs. Each computes its facts and returns them as a small dataclass (what
tests and notebooks read); its ``text`` is the lines the CLI prints, its ``out`` the picture it
wrote (where it writes one). The ``explain_*`` functions (the API's) return those dataclasses.
"""
import dataclasses
import os

import numpy as np

from ..checks import DEFAULT_IMAGE_SIZE, check_choice, check_positive, image_size as parse_image_size
from ..errors import SmallvisionError


# -- the facts ---------------------------------------------------------------------------------

class Facts:
    """What every explain verb returns: its figures as fields (``out``: the picture written, where
    it writes one), and :attr:`text`."""

    @property
    def text(self):
        """The lines the CLI prints."""
        return text(self)


@dataclasses.dataclass
class WorkedExample(Facts):
    total: float
    terms: str  # "(4 x 0) + ... = -8"


@dataclasses.dataclass
class ConvFacts(Facts):
    kernel_name: str
    kernel: np.ndarray
    input_size: tuple  # (h, w)
    padding: str
    stride: int
    output: np.ndarray
    formulas: tuple  # (rows, columns), with the numbers filled in
    out: str
    picture_size: tuple  # (width, height) of the PNG


@dataclasses.dataclass
class ModelFacts(Facts):
    what: str
    params: int
    trainable: int
    rows: list  # anatomy.Row
    last_conv: object  # anatomy.Row or None


@dataclasses.dataclass
class NetFacts:
    """One of the two nets ``explain pooling`` compares (and, trained, its figures)."""

    params: int
    dense_params: int
    features: int  # into the dense layer
    last_conv_shape: tuple
    receptive_field: int  # of the last conv layer
    run: str | None = None
    validation_accuracy: float | None = None
    test_accuracy: float | None = None


@dataclasses.dataclass
class PoolingFacts(Facts):
    pooled: NetFacts  # the chapter's convnet (strategy scratch)
    unpooled: NetFacts  # the same without max-pooling (strategy nopool)
    epochs: int | None = None
    train_data: str | None = None


@dataclasses.dataclass
class ActivationFacts(Facts):
    maps: dict  # {layer path: (h, w, c) array}
    which: str  # which layers were chosen, in words
    per_layer: int
    out: str
    picture_size: tuple


@dataclasses.dataclass
class HeatmapFacts(Facts):
    image: str
    predicted: str
    probability: float
    explained: str  # the class whose evidence is shown
    layer: str  # "efficientnet_lite0/top_conv"
    cam: np.ndarray  # heatmap in [0, 1] at the layer's resolution
    out: str
    picture_size: tuple

    @property
    def peak(self):
        """(row %, column %) of the strongest evidence."""
        r, c = np.unravel_index(int(np.argmax(self.cam)), self.cam.shape)
        return 100 * (r + 0.5) / self.cam.shape[0], 100 * (c + 0.5) / self.cam.shape[1]


# -- computing them ---------------------------------------------------------------------------

def conv(image=None, kernel="laplacian", padding="valid", stride=1, out="conv.png"):
    """Apply a kernel to an image with the NumPy reference convolution; write input | output.
    Without ``image``: the slide's worked example (a kernel centre of -4 over a pixel of 2 gives -8)."""
    from .conv import load_kernel, output_size, size_formula, worked_example
    from .maps import conv_picture, load_grey

    check_choice("padding", padding, ("valid", "same"))
    check_positive("stride", stride, integer=True)
    if image is None:
        return WorkedExample(*worked_example())
    k = load_kernel(kernel)
    grey = load_grey(image)
    (h, w), (kh, kw) = grey.shape, k.shape
    result, size = conv_picture(grey, k, out, stride=stride, padding=padding)
    assert result.shape[:2] == (output_size(h, kh, stride, padding), output_size(w, kw, stride, padding))
    return ConvFacts(kernel, k, (h, w), padding, stride, result,
                     (size_formula(h, kh, stride, padding), size_formula(w, kw, stride, padding)), out, size)


def _model_for(target, image_size=None):
    """A run folder, a .keras file or a strategy name -> (keras model, description)."""
    from .. import strategies
    from ..inference import open_model
    from ..runner import build

    if os.path.exists(target):
        opened = open_model(target)
        return opened.model, opened.description
    if target in strategies.names():
        h, w = parse_image_size(image_size or DEFAULT_IMAGE_SIZE)
        return build(strategies.TrainSpec.parse(target, image_size=(h, w), learning_rate=1e-3), 2), \
            f"strategy {target} at {h}x{w}"
    raise SmallvisionError(f"{target}: not a run folder, a .keras file, or a strategy ({', '.join(strategies.names())})")


def model(target, image_size=None):
    """Layer table (output shape, parameters, receptive field, cumulative stride)."""
    from .anatomy import last_conv, layer_table

    m, what = _model_for(target, image_size)
    rows = layer_table(m)
    trainable = sum(int(np.prod(w.shape)) for w in m.trainable_weights)
    return ModelFacts(what, m.count_params(), trainable, rows, last_conv(rows))


def pooling(image_size=None, train_data=None, epochs=5, out="runs", progress=True):
    """The chapter's convnet beside the same net without max-pooling; optionally train both."""
    from .anatomy import last_conv, layer_table

    image_size = parse_image_size(image_size or DEFAULT_IMAGE_SIZE)
    nets = {}
    for name in ("scratch", "nopool"):
        m, _ = _model_for(name, image_size)
        rows = layer_table(m)
        dense = [r for r in rows if r.kind == "Dense"][-1]
        flat = [r for r in rows if r.kind == "Flatten"][-1]
        conv_row = last_conv(rows)
        nets[name] = NetFacts(params=m.count_params(), dense_params=dense.params, features=flat.output_shape[0],
                              last_conv_shape=conv_row.output_shape, receptive_field=conv_row.receptive_field)
    if train_data is None:
        return PoolingFacts(nets["scratch"], nets["nopool"])
    from ..runner import train
    for name in ("scratch", "nopool"):
        run = train(train_data, name, out=out, epochs=epochs, image_size=image_size, progress=progress, verbose=0)
        m = run.metrics
        nets[name] = dataclasses.replace(nets[name], run=run.path, validation_accuracy=m.validation.accuracy,
                                         test_accuracy=m.test.accuracy if m.test else None)
    return PoolingFacts(nets["scratch"], nets["nopool"], epochs, os.fspath(train_data))


def _run_image(run_path, image):
    from ..inference import open_model, read_one
    opened = open_model(run_path)
    return opened, read_one(image, opened.spec)


def activations(run_path, image, out="activations.png", per_layer=16):
    """Feature maps of the model's conv layers (a readable subset for a deep base) for one image."""
    from .maps import activation_grid, activations as compute, feature_layers

    check_positive("per_layer", per_layer, integer=True)
    opened, pixels = _run_image(run_path, image)
    try:
        layers, which = feature_layers(opened.model)
        maps = compute(opened.model, pixels, layers)
    except ValueError as e:
        raise SmallvisionError(f"{run_path}: {e}") from None
    size = activation_grid(maps, out, per_layer=per_layer)
    return ActivationFacts(maps, which, per_layer, out, size)


def heatmap(run_path, image, out="heatmap.png", class_name=None):
    """Grad-CAM: where the model looked for its answer (the last conv layer, inside a base too)."""
    from .maps import grad_cam, heatmap_picture

    opened, pixels = _run_image(run_path, image)
    names = opened.class_names
    k = None
    if class_name is not None:
        k = names.index(check_choice("class_name", class_name, names))
    try:
        cam, probs, k, layer = grad_cam(opened.model, pixels, k)
    except ValueError as e:
        raise SmallvisionError(f"{run_path}: {e}") from None
    size = heatmap_picture(pixels, cam, out)
    best = int(np.argmax(probs))
    return HeatmapFacts(os.fspath(image), names[best], float(probs[best]), names[k], layer, cam, out, size)


# -- the words -------------------------------------------------------------------------------

def text(facts):
    """The lines the CLI prints for any of the facts above."""
    return _FORMATS[type(facts)](facts)


def _worked(f):
    return ("The slide's worked example: the kernel's centre is laid over the source pixel, which is "
            "replaced by the weighted sum of itself and its neighbours:\n" + f.terms)


def _conv(f):
    (h, w), (kh, kw) = f.input_size, f.kernel.shape
    rows = "\n".join("    " + " ".join(f"{v:g}" for v in row) for row in f.kernel)
    pw, ph = f.picture_size
    return (f"kernel {f.kernel_name} ({kh}x{kw}):\n{rows}\n"
            f"input {h}x{w} (height x width), padding {f.padding}, stride {f.stride}\n"
            f"output {f.output.shape[0]}x{f.output.shape[1]}, values {f.output.min():.4g} .. {f.output.max():.4g}\n"
            f"  rows:    {f.formulas[0]}\n"
            f"  columns: {f.formulas[1]}\n"
            f"wrote {f.out} ({pw}x{ph} pixels: input | output)")


def _model(f):
    from .anatomy import format_table
    out = f"{f.what}: {f.params:,} parameters ({f.trainable:,} trainable)\n" + format_table(f.rows)
    if f.last_conv:
        rf = f.last_conv.receptive_field
        out += f"\nlast conv layer {f.last_conv.name} sees {rf}x{rf} input pixels"
    return out


def _pooling(f):
    a, b = f.pooled, f.unpooled
    shape = lambda s: "x".join(map(str, s))
    rf = lambda x: f"{x.receptive_field}x{x.receptive_field}"
    lines = [f"{'':<34}{'with max-pooling':>20}{'without':>20}",
             f"{'parameters':<34}{a.params:>20,}{b.params:>20,}",
             f"{'features into the dense layer':<34}{a.features:>20,}{b.features:>20,}",
             f"{'  (last conv output)':<34}{shape(a.last_conv_shape):>20}{shape(b.last_conv_shape):>20}",
             f"{'dense layer parameters':<34}{a.dense_params:>20,}{b.dense_params:>20,}",
             f"{'receptive field of the last conv':<34}{rf(a):>20}{rf(b):>20}",
             f"Without pooling the dense layer has {b.dense_params / a.dense_params:.0f}x the weights, and the "
             f"last conv layer sees {rf(b)} pixels: too little of the image to learn what a cat is."]
    if f.train_data is not None:
        acc = lambda v: "-" if v is None else f"{v:.4f}"
        lines += [f"after {f.epochs} epochs on {f.train_data}:",
                  f"{'validation accuracy':<34}{acc(a.validation_accuracy):>20}{acc(b.validation_accuracy):>20}",
                  f"{'test accuracy':<34}{acc(a.test_accuracy):>20}{acc(b.test_accuracy):>20}"]
    return "\n".join(lines)


def _activations(f):
    width = max(len(n) for n in f.maps) + 2
    lines = [f"showing {f.which}", f"{'layer':<{width}}{'shape':>16}{'zero':>8}{'mean':>10}"]
    for name, a in f.maps.items():
        lines.append(f"{name:<{width}}{'x'.join(map(str, a.shape)):>16}{(a <= 0).mean():>8.0%}{a.mean():>10.3f}")
    w, h = f.picture_size
    lines.append(f"wrote {f.out} ({w}x{h} pixels: per layer, its {f.per_layer} most active channels)")
    return "\n".join(lines)


def _heatmap(f):
    down, across = f.peak
    w, h = f.picture_size
    return (f"{f.image}: predicted {f.predicted} ({f.probability:.3f}); heatmap for {f.explained}\n"
            f"Grad-CAM on {f.layer} ({f.cam.shape[0]}x{f.cam.shape[1]} grid), values {f.cam.min():.2f} .. "
            f"{f.cam.max():.2f} (mean {f.cam.mean():.2f})\n"
            f"strongest evidence at {down:.0f}% down, {across:.0f}% across\n"
            f"wrote {f.out} ({w}x{h} pixels: image | heatmap)")


_FORMATS = {WorkedExample: _worked, ConvFacts: _conv, ModelFacts: _model, PoolingFacts: _pooling,
            ActivationFacts: _activations, HeatmapFacts: _heatmap}


# -- the API's verbs: the facts, with their text -------------------------------------------------

def explain_conv(image=None, kernel="laplacian", padding="valid", stride=1, out="conv.png"):
    """Apply a kernel to an image (or show the slide's worked example). Returns :class:`ConvFacts`
    (``.text``, ``.out`` the PNG) or :class:`WorkedExample`."""
    return conv(image, kernel, padding, stride, out)


def explain_model(target, image_size=None):
    """Layer table of a run, a .keras file or a strategy. Returns :class:`ModelFacts` (``.rows``)."""
    return model(target, image_size)


def explain_pooling(image_size=None, train_data=None, epochs=5, out="runs", progress=True):
    """The chapter's convnet beside the same net without max-pooling. Returns :class:`PoolingFacts`."""
    return pooling(image_size, train_data, epochs, out, progress)


def explain_activations(run_path, image, out="activations.png", per_layer=16):
    """Feature maps as a PNG grid. Returns :class:`ActivationFacts` (``.out`` the PNG)."""
    return activations(run_path, image, out, per_layer)


def explain_heatmap(run_path, image, out="heatmap.png", class_name=None):
    """Grad-CAM heatmap. Returns :class:`HeatmapFacts` (``.out`` the PNG)."""
    return heatmap(run_path, image, out, class_name)
