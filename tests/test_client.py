"""The reference client (``smallvision.client``, every export's ``predict.py``) decodes as
smallvision's decoder does: same pixels on every JPEG layout we can make, and its own header
reader agrees with Pillow's (size, EXIF/XMP orientation), refusing what Pillow refuses."""
import io
import struct

import numpy as np
import pytest
from PIL import Image

from smallvision import client
from smallvision.data.decode import BadImage, DecodeSpec, decode_bytes


def photo(seed, w=301, h=217, mode="RGB"):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([(x * 255 // w), (y * 255 // h), ((x + y) * 3) % 256], -1).astype(np.float64)
    a = np.clip(a + rng.normal(0, 25, a.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(a).convert(mode)


def jpeg(img, **kw):
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=kw.pop("quality", 90), **kw)
    return buf.getvalue()


def exif_block(orientation, endian="<", kind=3, count=1, extra_entries=0):
    """A TIFF-structured EXIF APP1 payload with the orientation tag written by hand."""
    tiff = (b"II*\x00" if endian == "<" else b"MM\x00*") + struct.pack(endian + "I", 8)
    entries = [struct.pack(endian + "HHI", 0x010F, 2, 4) + b"cam\x00"] * extra_entries
    value = struct.pack(endian + ("H2x" if kind in (3, 8) else "I"), orientation)
    entries.append(struct.pack(endian + "HHI", 0x0112, kind, count) + value)
    return b"Exif\x00\x00" + tiff + struct.pack(endian + "H", len(entries)) + b"".join(entries) + b"\x00" * 4


def with_segment(data, marker, payload, after_soi=True):
    seg = b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload
    return data[:2] + seg + data[2:]


def same(data, spec):
    try:
        want = decode_bytes(data, spec)[0]
    except BadImage:
        with pytest.raises(ValueError):
            client.decode(data, spec)
        return None
    got = client.decode(data, spec)
    assert got.shape == want.shape
    return int(np.abs(got.astype(int) - want.astype(int)).max())


SPECS = [DecodeSpec(64, 64), DecodeSpec(40, 72), DecodeSpec(72, 40, True), DecodeSpec(217, 301), DecodeSpec(30, 30, True)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.key)
@pytest.mark.parametrize("variant", ["baseline", "progressive", "gray", "optimized-420", "444", "restart"])
def test_every_jpeg_layout_decodes_to_the_same_pixels(spec, variant):
    img = photo(1, mode="L" if variant == "gray" else "RGB")
    kw = {"progressive": {"progressive": True}, "optimized-420": {"optimize": True, "subsampling": 2},
          "444": {"subsampling": 0}, "restart": {"restart_marker_blocks": 1}}.get(variant, {})
    assert same(jpeg(img, **kw), spec) == 0


@pytest.mark.parametrize("orientation", range(0, 10))
@pytest.mark.parametrize("endian", ["<", ">"])
def test_exif_orientation_read_by_hand_as_pillow_reads_it(orientation, endian):
    data = with_segment(jpeg(photo(2)), 0xE1, exif_block(orientation, endian, extra_entries=2))
    assert client.jpeg_header(data)[3] == int(Image.open(io.BytesIO(data)).getexif().get(0x0112, 1))
    assert same(data, DecodeSpec(60, 90, True)) == 0


@pytest.mark.parametrize("case", ["long", "count2", "bad-tiff", "short-ifd", "xmp", "xmp-and-exif", "two-exif",
                                  "comment-and-padding", "sof-twice", "junk-between"])
def test_header_oddities_agree_with_pillow(case):
    base = jpeg(photo(3))
    data = {
        "long": lambda: with_segment(base, 0xE1, exif_block(6, kind=4)),
        "count2": lambda: with_segment(base, 0xE1, exif_block(6, count=2)),
        "bad-tiff": lambda: with_segment(base, 0xE1, b"Exif\x00\x00XX*\x00" + b"\x00" * 10),
        "short-ifd": lambda: with_segment(base, 0xE1, exif_block(6)[:20]),
        "xmp": lambda: with_segment(base, 0xE1, client._XMP + b'<x tiff:Orientation="8"/>'),
        "xmp-and-exif": lambda: with_segment(with_segment(base, 0xE1, client._XMP + b'<x tiff:Orientation="8"/>'),
                                             0xE1, exif_block(3)),
        "two-exif": lambda: with_segment(with_segment(base, 0xE1, exif_block(5)), 0xE1, exif_block(7)),
        "comment-and-padding": lambda: base[:2] + b"\xff\xfe\x00\x05abc" + b"\xff\xff" + base[2:],
        "sof-twice": lambda: base,  # overwritten below
        "junk-between": lambda: base[:2] + b"\xff\xfe\x00\x04ab" + b"\x00\x17" + base[2:],
    }[case]()
    if case == "sof-twice":  # a second frame header before the real one: Pillow keeps the last
        data = with_segment(base, 0xC0, bytes([8]) + struct.pack(">HH", 50, 70) + b"\x03" + b"\x01\x22\x00" * 3)
    try:
        im = Image.open(io.BytesIO(data))
        want = (im.size[0], im.size[1], int(im.getexif().get(0x0112, 1)))
    except Exception:
        with pytest.raises(ValueError):
            client.jpeg_header(data)
        return
    try:
        got = client.jpeg_header(data)
    except ValueError:
        pytest.fail(f"{case}: the client refuses a header Pillow reads")
    assert (got[0], got[1], got[3]) == want
    assert same(data, DecodeSpec(50, 50)) in (None, 0)


@pytest.mark.parametrize("data", [b"", b"\xff\xd8\xff", b"\xff\xd8\xff\x01\x00\x00", b"\xff\xd8\xff\xc0\x00\x08\x0c",
                                  b"not an image at all", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 40],
                         ids=["empty", "soi", "bad-marker", "short-sof", "text", "no-frame"])
def test_what_the_decoder_refuses_the_client_refuses(data):
    assert same(data, DecodeSpec(32, 32)) is None


def test_truncated_and_cmyk_and_png():
    spec = DecodeSpec(48, 64)
    good = jpeg(photo(4))
    assert same(good[: len(good) // 2], spec) in (None, 0)  # truncated: refused by both or the same
    cmyk = jpeg(photo(4, mode="CMYK"))  # CMYK: Pillow's conversion there, OpenCV's here (documented)
    assert np.abs(client.decode(cmyk, spec).astype(int) - decode_bytes(cmyk, spec)[0]).mean() < 8
    buf = io.BytesIO()
    photo(5).save(buf, "PNG")
    assert same(buf.getvalue(), spec) <= 1  # PNG: a box filter on the same pixels
    rgba = photo(6).convert("RGBA")
    rgba.putalpha(Image.fromarray((np.arange(217 * 301).reshape(217, 301) % 256).astype(np.uint8)))
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    assert same(buf.getvalue(), spec) <= 1  # transparency on white, both


def test_the_client_runs_standalone(tmp_path):
    """predict.py imports no smallvision: run as a script from a folder without it."""
    import ast
    tree = ast.parse(open(client.__file__, encoding="utf-8").read())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} | \
        {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"json", "os", "re", "sys", "cv2", "numpy", "onnxruntime", "openvino", "tensorflow",
                        "ai_edge_litert"}, imported
