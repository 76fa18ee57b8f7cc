"""The chapter's augmentation on one uint8 image, in OpenCV: what the cached views of
``features-augment`` are made of.

The same family as the chapter's layers (``RandomFlip("horizontal")``, ``RandomRotation(0.1)``,
``RandomZoom(0.2)``: a horizontal flip half the time, a rotation of up to ±0.1 turn (±36°),
a zoom of up to ±20 %, edges filled by reflection, bilinear sampling), drawn per image from a
generator the caller seeds — so view ``k`` of an image is the same pixels whichever process,
batch or run computes it, and a cache of views can be shared and extended safely.
"""
import cv2
import numpy as np


def view_rng(sha256, *keys):
    """The generator of one view: seeded by the image's content hash and ``keys`` (view index,
    or seed and epoch)."""
    return np.random.default_rng([int(sha256[:16], 16), *[int(k) for k in keys]])


def chapter_view(image, rng, flip=True, rotation=0.1, zoom=0.2):
    """One random view of ``image`` (H x W x 3 uint8) -> an array of the same shape and type."""
    h, w = image.shape[:2]
    flipped = flip and rng.random() < 0.5
    angle = rng.uniform(-rotation, rotation) * 2 * np.pi
    scale = 1.0 + rng.uniform(-zoom, zoom)  # > 1 samples a larger area: zoom out
    cos, sin = np.cos(angle), np.sin(angle)
    a = scale * np.array([[cos, -sin], [sin, cos]])
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    m = np.hstack([a, (centre - a @ centre)[:, None]])  # output pixel -> input pixel
    src = np.ascontiguousarray(image[:, ::-1]) if flipped else image
    return cv2.warpAffine(src, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)
