"""The decoder: modes to RGB, EXIF orientation, crop, draft decoding close to a full decode."""
import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from smallvision.data.decode import BadImage, DecodeSpec, decode_bytes
from conftest import shape_image


def encode(img, fmt="PNG", **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def full_reference(img, spec):
    """Full-size decode, then an area-averaging resize: the true downscaled picture."""
    import cv2
    a = np.asarray(img.convert("RGB"))
    return cv2.resize(a, (spec.width, spec.height), interpolation=cv2.INTER_AREA)


SPEC = DecodeSpec(40, 40)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGB", "1"])
def test_modes_become_rgb(mode):
    img = Image.fromarray(shape_image(0, 40, np.random.default_rng(1))).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    a, info = decode_bytes(encode(img, fmt), SPEC)
    assert a.shape == (40, 40, 3) and a.dtype == np.uint8
    expected = np.asarray(img.convert("RGB"), dtype=float)
    tol = 12 if fmt == "JPEG" else 0.5
    assert np.abs(a.astype(float) - expected).mean() < tol
    assert info.mode == mode


def test_rgba_is_composited_on_white():
    img = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    img.paste((0, 0, 255, 255), (0, 0, 20, 40))
    a, _ = decode_bytes(encode(img), SPEC)
    assert tuple(a[20, 30]) == (255, 255, 255)  # transparent -> white, not black or red
    assert tuple(a[20, 5]) == (0, 0, 255)


def test_palette_with_transparency_is_composited_on_white():
    img = Image.new("P", (40, 40), 0)
    img.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    img.paste(1, (0, 0, 20, 40))
    a, _ = decode_bytes(encode(img, transparency=0), SPEC)
    assert tuple(a[20, 30]) == (255, 255, 255) and tuple(a[20, 5]) == (0, 255, 0)


def test_16_bit_greyscale_is_scaled_not_clipped():
    ramp = np.tile(np.linspace(0, 65535, 40).astype(np.uint16), (40, 1))
    a, _ = decode_bytes(encode(Image.fromarray(ramp)), SPEC)
    assert a[0, 0, 0] == 0 and a[0, -1, 0] == 255 and 120 <= a[0, 20, 0] <= 140


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_matches_pillow(orientation, fmt):
    img = Image.fromarray(shape_image(1, 48, np.random.default_rng(2))[:, :40])  # 48 high, 40 wide
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(img, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    spec = DecodeSpec(48, 40) if orientation < 5 else DecodeSpec(40, 48)
    a, _ = decode_bytes(data, spec)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert expected.shape == a.shape
    assert np.abs(a.astype(float) - expected).mean() < 3


def test_crop_to_aspect_keeps_the_centre():
    img = np.zeros((40, 120, 3), np.uint8)
    img[:, 40:80] = 255  # a white centre square between black sides
    a, _ = decode_bytes(encode(Image.fromarray(img)), DecodeSpec(20, 20, crop_to_aspect=True))
    assert a.min() > 250
    squashed, _ = decode_bytes(encode(Image.fromarray(img)), DecodeSpec(20, 20))
    assert squashed[:, 0].max() < 5  # without crop, the black sides stay


def test_draft_decoding_is_close_to_a_full_decode():
    rng = np.random.default_rng(3)
    big = np.kron(shape_image(0, 100, rng), np.ones((8, 8, 1), np.uint8))  # 800x800, smooth content
    img = Image.fromarray(big)
    data = encode(img, "JPEG", quality=95)
    spec = DecodeSpec(180, 180)
    a, _ = decode_bytes(data, spec)
    ref = full_reference(Image.open(io.BytesIO(data)), spec)
    assert np.abs(a.astype(float) - ref).mean() < 2.5


def test_specs_are_checked_and_keyed():
    with pytest.raises(ValueError, match="Received: height=2"):
        DecodeSpec(2, 40)
    assert DecodeSpec(180, 180).key != DecodeSpec(180, 180, crop_to_aspect=True).key


def test_garbage_after_a_jpeg_header_is_corrupt():
    data = bytearray(encode(Image.fromarray(shape_image(0, 64, np.random.default_rng(4))), "JPEG"))
    data[300:] = b"\x00" * (len(data) - 300)  # header intact, entropy data destroyed, no end marker
    with pytest.raises(BadImage):
        decode_bytes(bytes(data), SPEC)
