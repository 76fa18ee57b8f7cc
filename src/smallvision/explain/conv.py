"""Convolution and pooling in plain NumPy, written to be read, and checked against Keras.

Like ``keras.layers.Conv2D``, "convolution" here is cross-correlation: the kernel is laid
over the image as it is (not flipped), each output pixel is the weighted sum of the
neighbourhood under it, plus a bias. Shapes follow Keras (channels last):

    image   (height, width, in_channels)
    kernels (kh, kw, in_channels, filters)
    output  (out_height, out_width, filters)

Output size along one axis, for input n, kernel k, stride s, dilation d:

    valid:  out = floor((n - d*(k-1) - 1) / s) + 1      (the borders are lost)
    same:   out = ceil(n / s)                           (zeros padded around, split as Keras does)
"""
import math

import numpy as np

# The slide's worked example: kernel centre -4 over a source pixel of 2, the eight
# neighbours contributing 0, so the pixel becomes -8.
SLIDE_SOURCE = np.array([[4, 0, 0], [0, 2, 0], [0, 0, 0]], dtype=np.float64)
SLIDE_KERNEL = np.array([[0, 0, 0], [0, -4, 1], [1, 0, 1]], dtype=np.float64)

KERNELS = {
    "identity": [[0, 0, 0], [0, 1, 0], [0, 0, 0]],
    "edge": [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]],
    "laplacian": [[0, 1, 0], [1, -4, 1], [0, 1, 0]],
    "sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
    "blur": (np.ones((3, 3)) / 9).tolist(),
    "gaussian": (np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16).tolist(),
    "sobel-x": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "sobel-y": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "emboss": [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]],
}


def output_size(n, k, stride=1, padding="valid", dilation=1):
    """Output length along one axis (see the module docstring for the formula)."""
    if padding == "same":
        return math.ceil(n / stride)
    if padding != "valid":
        raise ValueError(f"padding must be 'valid' or 'same'. Received: padding={padding!r}")
    span = dilation * (k - 1) + 1
    return max(0, (n - span) // stride + 1)


def size_formula(n, k, stride=1, padding="valid", dilation=1):
    """The formula with the numbers filled in, e.g. 'valid: floor((180 - 1*(3-1) - 1) / 1) + 1 = 178'."""
    out = output_size(n, k, stride, padding, dilation)
    if padding == "same":
        return f"same: ceil({n} / {stride}) = {out}"
    return f"valid: floor(({n} - {dilation}*({k}-1) - 1) / {stride}) + 1 = {out}"


def same_padding(n, k, stride=1, dilation=1):
    """(before, after) zeros that 'same' padding adds along one axis (TensorFlow/Keras convention)."""
    span = dilation * (k - 1) + 1
    out = math.ceil(n / stride)
    total = max((out - 1) * stride + span - n, 0)
    return total // 2, total - total // 2


def _pad(image, kh, kw, stride, padding, dilation, value=0.0):
    if padding == "valid":
        return image
    ph = same_padding(image.shape[0], kh, stride[0], dilation[0])
    pw = same_padding(image.shape[1], kw, stride[1], dilation[1])
    return np.pad(image, (ph, pw, (0, 0)), constant_values=value)


def _pair(v):
    return (v, v) if np.isscalar(v) else tuple(v)


def conv2d(image, kernels, bias=None, stride=1, padding="valid", dilation=1):
    """2-D convolution of one image with a bank of filters, by the definition.

    Args:
        image: ``(H, W)`` or ``(H, W, C)``.
        kernels: ``(kh, kw)``, ``(kh, kw, C)`` or ``(kh, kw, C, F)``.
        bias: ``(F,)`` or None.
        stride, dilation: int or (rows, cols).
        padding: "valid" or "same".

    Returns:
        ``(out_h, out_w, F)`` float64.
    """
    x = np.asarray(image, dtype=np.float64)
    if x.ndim == 2:
        x = x[..., None]
    w = np.asarray(kernels, dtype=np.float64)
    if w.ndim == 2:
        w = np.repeat(w[:, :, None], x.shape[2], axis=2) if x.shape[2] == 1 else w[:, :, None]
    if w.ndim == 3:
        w = w[..., None]
    kh, kw, c, f = w.shape
    if c != x.shape[2]:
        raise ValueError(f"kernel has {c} input channels, image has {x.shape[2]}")
    stride, dilation = _pair(stride), _pair(dilation)
    oh = output_size(x.shape[0], kh, stride[0], padding, dilation[0])
    ow = output_size(x.shape[1], kw, stride[1], padding, dilation[1])
    x = _pad(x, kh, kw, stride, padding, dilation)
    out = np.zeros((oh, ow, f))
    for i in range(kh):  # one kernel tap at a time: each adds tap weight x shifted image
        for j in range(kw):
            r0, c0 = i * dilation[0], j * dilation[1]
            patch = x[r0:r0 + stride[0] * (oh - 1) + 1:stride[0], c0:c0 + stride[1] * (ow - 1) + 1:stride[1], :]
            out += patch @ w[i, j]  # (oh, ow, c) @ (c, f)
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64)
    return out


def pool2d(image, size=2, stride=None, padding="valid", mode="max"):
    """Max- or average-pooling of ``(H, W, C)``, window ``size``, stride defaults to ``size``.

    'same' padding ignores the padded cells (as Keras does) for both modes.
    """
    x = np.asarray(image, dtype=np.float64)
    if x.ndim == 2:
        x = x[..., None]
    (ph, pw), stride = _pair(size), _pair(stride or size)
    oh = output_size(x.shape[0], ph, stride[0], padding)
    ow = output_size(x.shape[1], pw, stride[1], padding)
    fill = -np.inf if mode == "max" else np.nan
    x = _pad(x, ph, pw, stride, padding, (1, 1), value=fill)
    windows = np.stack([x[i:i + stride[0] * (oh - 1) + 1:stride[0], j:j + stride[1] * (ow - 1) + 1:stride[1], :]
                        for i in range(ph) for j in range(pw)])
    if mode == "max":
        return windows.max(axis=0)
    if mode == "average":
        return np.nanmean(windows, axis=0)
    raise ValueError(f"mode must be 'max' or 'average'. Received: mode={mode!r}")


def worked_example():
    """The slide's example as text: the nine products and their sum (-8)."""
    terms = [f"({int(s)} x {int(k)})" for s, k in zip(SLIDE_SOURCE.ravel(), SLIDE_KERNEL.ravel())]
    total = conv2d(SLIDE_SOURCE, SLIDE_KERNEL)[0, 0, 0]
    return total, "  " + "\n+ ".join(terms) + f"\n= {total:g}"


def load_kernel(spec):
    """A named kernel (see KERNELS) or a file: .npy, or text rows of numbers (spaces or commas)."""
    if spec in KERNELS:
        return np.array(KERNELS[spec], dtype=np.float64)
    import os

    from ..errors import SmallvisionError
    if not os.path.isfile(spec):
        raise SmallvisionError(f"{spec}: not a kernel name ({', '.join(KERNELS)}) nor a file")
    try:
        if spec.endswith(".npy"):
            k = np.load(spec, allow_pickle=False)
        else:
            with open(spec, encoding="utf-8") as f:
                rows = [l.replace(",", " ").split() for l in f if l.strip() and not l.lstrip().startswith("#")]
            k = np.array([[float(v) for v in r] for r in rows])
    except ValueError as e:
        raise SmallvisionError(f"{spec}: expected rows of numbers of equal length ({e})") from None
    if k.ndim != 2 or min(k.shape) < 1:
        raise SmallvisionError(f"{spec}: expected a 2-D kernel, got shape {k.shape}")
    return k
