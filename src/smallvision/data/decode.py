"""Decode one image file to a uint8 RGB array at the target size — the only decoder in smallvision.

Training (through the cache), prediction and the scan's integrity check all call
:func:`decode_bytes`, so an image is preprocessed the same way everywhere. Reading the
file is :mod:`.imagefile`'s job (regular files only, size limit).

How an image becomes ``height × width × 3`` uint8:

1. The content decides the format, not the extension. Pillow reads the header (its
   decompression-bomb limit stays on), the EXIF orientation and the mode.
2. The image is reduced by the largest power of two (1, 2, 4, 8) that keeps it at least as
   large as the target: for JPEG inside the decoder (libjpeg's DCT scaling, "draft" decoding,
   via OpenCV for RGB/grayscale JPEGs), otherwise with a box filter. This is where the
   speed comes from; ``bench/`` records how far it is from a full decode.
3. Modes become RGB: grayscale, palette, CMYK, 16-bit; transparency is composited on white.
4. The EXIF orientation is applied.
5. Optionally the centre is cropped to the target aspect ratio (Keras' ``crop_to_aspect_ratio``).
6. Bilinear resize with half-pixel centres, like ``tf.image.resize`` (Keras' default).

Steps 2 (the factor), 4, 5 and 6 are :mod:`smallvision.client`'s functions: that file is the
reference client copied into every export as ``predict.py``, so a deployer decodes alike.

Every byte of the entropy-coded data is decoded in step 2, so a truncated or corrupt file
fails here: the scan uses this same decode as its integrity check.
"""
import contextlib
import dataclasses
import io
import warnings

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from ..client import REDUCED, finish, has_jpeg_end, reduction  # the steps the exported predict.py shares

DECODER_VERSION = 1  # bump when the pixels this module produces change: it invalidates caches

_EXIF_ORIENTATION = 0x0112


@contextlib.contextmanager
def opencv_threads(n=1):
    """OpenCV's own thread count while a pool of ours decodes files in parallel (nested thread
    pools only oversubscribe the cores); the previous setting is restored afterwards."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


class BadImage(Exception):
    """The file cannot be used; ``str(exc)`` is the reject reason shown to the user."""


@dataclasses.dataclass(frozen=True)
class DecodeSpec:
    """What the decoder produces: target size and whether to crop to its aspect ratio."""

    height: int = 180
    width: int = 180
    crop_to_aspect: bool = False

    def __post_init__(self):
        for name in ("height", "width"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 8:
                raise ValueError(f"image {name} must be an integer >= 8. Received: {name}={v!r}")

    @property
    def shape(self):
        return (int(self.height), int(self.width), 3)

    @property
    def key(self):
        """Names the cache folder: size, method and decoder version."""
        fit = "crop" if self.crop_to_aspect else "squash"
        return f"{self.height}x{self.width}-bilinear-{fit}-v{DECODER_VERSION}"


@dataclasses.dataclass
class ImageInfo:
    format: str
    width: int
    height: int
    mode: str
    notes: list


def _to_rgb(im):
    """Pillow image in any mode -> HxWx3 uint8 array."""
    mode = im.mode
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:4] / 255.0
        return np.clip(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha) + 0.5, 0, 255).astype(np.uint8)
    if mode.startswith("I;16") or mode == "I":
        g = np.asarray(im).astype(np.float32) / 257.0  # 16-bit range -> 8-bit
        g = np.clip(g + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if mode == "F":
        g = np.clip(np.asarray(im, dtype=np.float32) + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def open_image(data):
    """Pillow image from bytes, or BadImage with the reason (empty, not an image, bomb)."""
    if len(data) == 0:
        raise BadImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(f"decompression bomb refused: {e}") from None
    except UnidentifiedImageError:
        raise BadImage("not an image (no decoder recognises the content)") from None
    except Exception as e:  # a header so broken that Pillow fails while reading it
        raise BadImage(f"unreadable image header: {e}") from None


def decode_bytes(data, spec):
    """Decode an encoded image to ``spec.shape`` uint8 RGB.

    Args:
        data: the file's bytes.
        spec: a :class:`DecodeSpec`.

    Returns:
        ``(array, ImageInfo)``.

    Raises:
        BadImage: with a one-line reason when the content cannot be used.
    """
    im = open_image(data)
    fmt, (w, h), mode = im.format or "unknown", im.size, im.mode
    notes = []
    try:
        orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:
        orientation, _ = 1, notes.append("EXIF block unreadable; orientation ignored")
    if getattr(im, "n_frames", 1) > 1:
        notes.append(f"{im.n_frames} frames; the first is used")
    f = reduction(w, h, orientation, spec)
    info = ImageInfo(fmt, w, h, mode, notes)

    if fmt == "JPEG" and mode in ("RGB", "L") and has_jpeg_end(data):
        flags = REDUCED[f] | cv2.IMREAD_IGNORE_ORIENTATION
        a = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
        if a is not None:
            return finish(a, orientation, spec, bgr=True), info
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if fmt == "JPEG":
                im.draft(None, (max(1, w // f), max(1, h // f)))
            im.load()
            if fmt == "JPEG":  # the draft already reduced by d; box-reduce the rest
                f = max(1, f // max(1, round(w / im.size[0])))
            a = _to_rgb(im)
            if f > 1:  # box filter by an integer factor (Pillow's reduce() refuses palette/16-bit modes)
                a = cv2.resize(a, (-(-a.shape[1] // f), -(-a.shape[0] // f)), interpolation=cv2.INTER_AREA)
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e) or type(e).__name__
        if "truncated" in msg.lower() or isinstance(e, EOFError):
            raise BadImage(f"truncated: {msg}") from None
        raise BadImage(f"corrupt {fmt} data: {msg}") from None
    except Image.DecompressionBombWarning as e:
        raise BadImage(f"decompression bomb refused: {e}") from None
    return finish(a, orientation, spec), info
