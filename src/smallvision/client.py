#!/usr/bin/env python3
"""Classify image files with an exported smallvision model — no smallvision needed.

    python predict.py IMAGE... [--batch-size 32]

prints one line per image: ``path<TAB>class<TAB>probability of that class`` (an image that
cannot be used: ``path<TAB>error<TAB>why``, on stderr too; exit 1 if any). It reads
``labels.json`` beside it (class names, input size, format) and needs NumPy, OpenCV
(``pip install opencv-python-headless``) and the format's runtime: onnxruntime (onnx),
openvino (openvino), tensorflow (saved_model), ai-edge-litert or tensorflow (litert).

It decodes exactly as smallvision trained (this file is smallvision's own decoding: its decoder
imports the steps below, and every export's check runs this copy against the run's model):

1. JPEG (baseline or progressive, RGB or grayscale, with its end marker): the header gives the
   size and the EXIF orientation (or XMP's ``tiff:Orientation`` when EXIF has none). The image
   is decoded by libjpeg at the largest scale 1/1, 1/2, 1/4 or 1/8 that keeps it at least as
   large as the target (after the orientation, and the crop when there is one) —
   ``cv2.imdecode`` with ``IMREAD_REDUCED_COLOR_<n> | IMREAD_IGNORE_ORIENTATION``.
2. Any other file (PNG, BMP, WebP, CMYK JPEG, ...): decoded whole, transparency composited on
   white, 16 bits divided by 257, then shrunk by the same power of two with ``INTER_AREA``.
   (smallvision reads these with Pillow: the same to a grey level for PNG, but CMYK JPEGs
   become RGB by OpenCV's formula, not Pillow's: ~6 grey levels apart on average.)
3. The EXIF orientation is applied (as PIL.ImageOps.exif_transpose).
4. With ``crop_to_aspect``, the centre is cropped to the target's aspect ratio.
5. ``cv2.resize(..., INTER_LINEAR)`` (bilinear, half-pixel centres) to height x width, BGR -> RGB.
6. The model takes uint8 RGB, NHWC, 0..255: it does its own scaling.
"""
import json
import os
import re
import sys

import cv2
import numpy as np

REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xDE}  # frame headers
_NO_LENGTH = {0xC8, *range(0xD0, 0xDA), *range(0xF0, 0xFE)}  # markers without a segment
_XMP = b"http://ns.adobe.com/xap/1.0/\x00"


STEPS = (  # labels.json carries these, so that the decoding can be written again from it alone
    "JPEG (RGB or grayscale, ending with its end marker FFD9): width, height and the EXIF orientation "
    "(IFD0 tag 0x0112; XMP tiff:Orientation when EXIF has none; 1 when neither) from the header",
    "f = the largest of 1, 2, 4, 8 with floor(cw / 2f) >= width and floor(ch / 2f) >= height, cw x ch being "
    "the stored image (its width and height swapped for orientations 5-8) or, with crop_to_aspect, its centre "
    "box of the target's aspect",
    "JPEG: libjpeg decodes at scale 1/f (cv2.imdecode(buf, IMREAD_REDUCED_COLOR_f | IMREAD_IGNORE_ORIENTATION)); "
    "other formats: decoded whole, transparency composited on white, 16 bits / 257, then cv2.resize to "
    "ceil(w / f) x ceil(h / f) with INTER_AREA",
    "the EXIF orientation applied (as PIL.ImageOps.exif_transpose)",
    "crop_to_aspect: the centre box of the target's aspect: if w / h > width / height, round(h * width / height) "
    "columns from floor((w - cw) / 2), else round(w * height / width) rows from floor((h - ch) / 2)",
    "cv2.resize to width x height with INTER_LINEAR (bilinear, half-pixel centres, no antialiasing), "
    "unless already that size",
    "RGB order, uint8 0..255, NHWC batches: the model scales the pixels itself",
)


class Spec:
    """The target: ``height``, ``width``, ``crop_to_aspect`` (smallvision's DecodeSpec has the same)."""

    def __init__(self, height, width, crop_to_aspect=False):
        self.height, self.width, self.crop_to_aspect = int(height), int(width), bool(crop_to_aspect)


def crop_box(w, h, spec):
    """Centre box (x0, y0, cw, ch) of a w x h image with the target's aspect ratio."""
    if not spec.crop_to_aspect:
        return 0, 0, w, h
    target = spec.width / spec.height
    if w / h > target:
        cw = max(1, round(h * target))
        return (w - cw) // 2, 0, cw, h
    ch = max(1, round(w / target))
    return 0, (h - ch) // 2, w, ch


def reduction(w, h, orientation, spec):
    """Largest power-of-two factor (1, 2, 4, 8) that keeps the (cropped) image >= the target."""
    if orientation in (5, 6, 7, 8):  # stored transposed: compare against the swapped target
        w, h = h, w
    _, _, cw, ch = crop_box(w, h, spec)
    f = 1
    while f < 8 and cw // (2 * f) >= spec.width and ch // (2 * f) >= spec.height:
        f *= 2
    return f


def orient(a, orientation):
    """An EXIF orientation applied to an HxWxC array (as PIL.ImageOps.exif_transpose)."""
    if orientation == 2:
        return a[:, ::-1]
    if orientation == 3:
        return a[::-1, ::-1]
    if orientation == 4:
        return a[::-1]
    if orientation == 5:
        return a.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(a, -1)
    if orientation == 7:
        return a[::-1, ::-1].transpose(1, 0, 2)
    if orientation == 8:
        return np.rot90(a, 1)
    return a


def finish(a, orientation, spec, bgr=False):
    """Steps 3-5: orientation, centre crop, bilinear resize (and BGR -> RGB after it: fewer pixels)."""
    a = orient(a, orientation)
    h, w = a.shape[:2]
    x0, y0, cw, ch = crop_box(w, h, spec)
    a = np.ascontiguousarray(a[y0:y0 + ch, x0:x0 + cw])
    if a.shape[0] != spec.height or a.shape[1] != spec.width:
        a = cv2.resize(a, (spec.width, spec.height), interpolation=cv2.INTER_LINEAR)
    if bgr:
        a = cv2.cvtColor(a, cv2.COLOR_BGR2RGB)
    return a


def has_jpeg_end(data):
    return data.rstrip(b"\0").endswith(b"\xff\xd9")


def _exif_orientation(exif):
    """Orientation tag (0x0112) of IFD0 in a TIFF-structured EXIF block, or None."""
    exif = re.sub(b"^(Exif\x00\x00){1,2}", b"", exif)
    if exif[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    e = "little" if exif[:2] == b"II" else "big"
    at = int.from_bytes(exif[4:8], e)
    count = int.from_bytes(exif[at:at + 2], e)
    for k in range(count):
        entry = exif[at + 2 + 12 * k:at + 14 + 12 * k]
        if len(entry) < 12:
            return None
        if int.from_bytes(entry[:2], e) == 0x0112:
            kind, n = int.from_bytes(entry[2:4], e), int.from_bytes(entry[4:8], e)
            size = {1: 1, 3: 2, 4: 4, 8: 2, 9: 4}.get(kind)
            if size is None or n < 1:
                return None
            where = entry[8:12] if n * size <= 4 else exif[int.from_bytes(entry[8:12], e):][:n * size]
            if len(where) < size:
                return None
            return int.from_bytes(where[:size], e, signed=kind in (8, 9))  # Pillow keeps the first of several
    return None


def jpeg_header(data):
    """``(width, height, components, orientation)`` of a JPEG, read as Pillow reads it (every
    marker up to the first scan; the last frame header counts; EXIF blocks joined, XMP as the
    fallback for the orientation); None when the bytes are not a JPEG; ValueError for a JPEG
    whose header Pillow refuses too."""
    if data[:3] != b"\xff\xd8\xff":
        return None
    bad = ValueError("unreadable JPEG header")
    i, frame, exif, xmp = 2, None, None, None
    while i + 1 < len(data):
        if data[i] != 0xFF:
            i += 1  # junk between markers
            continue
        marker = data[i + 1]
        if marker in (0x00, 0xFF):  # padding, or an escaped 0xFF
            i += 1 if marker == 0xFF else 2
            continue
        if marker < 0xC0:
            raise bad  # Pillow: "no marker found"
        if marker in _NO_LENGTH:
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        segment = data[i + 4:i + 2 + length]
        if length < 2 or len(segment) < length - 2:
            raise bad
        if marker in _SOF:
            if len(segment) < 6 or segment[0] != 8 or segment[5] not in (1, 3, 4):
                raise bad
            frame = (int.from_bytes(segment[3:5], "big"), int.from_bytes(segment[1:3], "big"), segment[5])
        elif marker == 0xE1 and segment.startswith(b"Exif\0\0"):
            exif = segment if exif is None else exif + segment[6:]
        elif marker == 0xE1 and segment.startswith(_XMP):
            xmp = segment.split(b"\x00", 1)[1]
        elif marker == 0xDA:
            break
        i += 2 + length
    if frame is None or not frame[0] or not frame[1]:
        raise bad
    try:
        orientation = _exif_orientation(exif) if exif else None
    except (IndexError, ValueError):
        orientation = None
    if orientation is None and xmp:
        match = re.search(rb'tiff:Orientation(="|>)([0-9])', xmp)
        orientation = int(match[2]) if match else None
    return frame + (1 if orientation is None else orientation,)


def _to_bgr(a):
    """Any array cv2.imdecode(IMREAD_UNCHANGED) gives -> HxWx3 uint8 BGR (alpha on white)."""
    if a.dtype == np.uint16:
        a = np.clip(a.astype(np.float32) / 257.0 + 0.5, 0, 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = np.clip(a.astype(np.float32) + 0.5, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[2] == 1:
        return np.repeat(a, 3, axis=2)
    if a.shape[2] == 4:
        alpha = a[..., 3:4].astype(np.float32) / 255.0
        return np.clip(a[..., :3] * alpha + 255.0 * (1.0 - alpha) + 0.5, 0, 255).astype(np.uint8)
    return a[..., :3]


def decode(data, spec):
    """An encoded image's bytes -> ``spec.height x spec.width x 3`` uint8 RGB, or ValueError."""
    if not data:
        raise ValueError("empty file (0 bytes)")
    try:
        return _decode(data, spec)
    except cv2.error as e:
        raise ValueError(f"OpenCV cannot decode it ({str(e).strip().splitlines()[-1][:200]})") from None


def _decode(data, spec):
    header = jpeg_header(data)
    if header is not None and header[2] in (1, 3) and has_jpeg_end(data):
        w, h, _, orientation = header
        f = reduction(w, h, orientation, spec)
        a = cv2.imdecode(np.frombuffer(data, np.uint8), REDUCED[f] | cv2.IMREAD_IGNORE_ORIENTATION)
        if a is not None:
            return finish(a, orientation, spec, bgr=True)
    a = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if a is None:
        raise ValueError("not an image OpenCV can decode")
    orientation = header[3] if header is not None else 1
    a = _to_bgr(a)
    f = reduction(a.shape[1], a.shape[0], orientation, spec)
    if f > 1:
        a = cv2.resize(a, (-(-a.shape[1] // f), -(-a.shape[0] // f)), interpolation=cv2.INTER_AREA)
    return finish(a, orientation, spec, bgr=True)


def runner(folder, labels):
    """``run(uint8 batch) -> the first output`` in the format's own runtime."""
    path = os.path.join(folder, labels["model_file"])
    fmt, dtype = labels["format"], np.dtype(labels["input"].get("dtype", "uint8"))
    if fmt == "onnx":
        import onnxruntime as ort
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x.astype(dtype)})[0]
    if fmt == "openvino":
        import openvino as ov
        model = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return lambda x: model(x.astype(dtype))[0]
    if fmt == "saved_model":
        import tensorflow as tf
        model = tf.saved_model.load(path)
        return lambda x: model.serve(tf.constant(x.astype(dtype))).numpy()
    if fmt == "litert":
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            import tensorflow as tf
            Interpreter = tf.lite.Interpreter
        interpreter = Interpreter(model_path=path)
        inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

        def run(x):
            interpreter.resize_tensor_input(inp["index"], x.shape)
            interpreter.allocate_tensors()
            interpreter.set_tensor(inp["index"], x.astype(dtype))
            interpreter.invoke()
            return interpreter.get_tensor(out["index"])
        return run
    raise ValueError(f"unknown format {fmt!r}")


def probabilities(out, n):
    """One probability per class: a single sigmoid column is p(class 1)."""
    out = np.asarray(out, np.float64).reshape(len(out), -1)
    return np.column_stack([1 - out[:, 0], out[:, 0]]) if out.shape[1] == 1 and n == 2 else out


def main(argv=None):
    args = list(sys.argv[1:] if argv is None else argv)
    batch = 32
    if "--batch-size" in args:
        k = args.index("--batch-size")
        batch, args = int(args[k + 1]), args[:k] + args[k + 2:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.split("\n\n")[1].strip())
        return 0 if args else 2
    folder = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(folder, "labels.json"), encoding="utf-8") as f:
        labels = json.load(f)
    names, inp = labels["class_names"], labels["input"]
    spec = Spec(inp["height"], inp["width"], inp.get("crop_to_aspect", False))
    run, failed = runner(folder, labels), 0
    for start in range(0, len(args), batch):
        decoded = {}
        for path in args[start:start + batch]:
            try:
                with open(path, "rb") as f:
                    decoded[path] = decode(f.read(), spec)
            except (OSError, ValueError) as e:
                decoded[path] = e
        good = [p for p, a in decoded.items() if not isinstance(a, Exception)]
        probs = dict(zip(good, probabilities(run(np.stack([decoded[p] for p in good])), len(names)))) if good else {}
        for path in args[start:start + batch]:  # in the order given
            if path in probs:
                k = int(np.argmax(probs[path]))
                print(f"{path}\t{names[k]}\t{probs[path][k]:.6f}")
            else:
                failed += 1
                print(f"{path}\terror\t{decoded[path]}")
                print(f"{path}: {decoded[path]}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
