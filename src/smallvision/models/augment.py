"""The chapter's data augmentation — a horizontal flip half the time, a rotation of up to ±0.1
turn, a zoom of up to ±20 % — in two forms that draw the same distribution:

* :func:`chapter_augmentation`: the chapter's three Keras layers (``RandomFlip``,
  ``RandomRotation``, ``RandomZoom``), as the published ``model.keras`` holds them (a plain Keras
  model, the identity outside training);
* :class:`RandomChapterAugmentation`: one layer that draws the three per image, composes them
  into one affine matrix and resamples once (``keras.ops.image.affine_transform``). It is what
  training runs: Keras marks ``RandomRotation`` and ``RandomZoom`` ``supports_jit = False``, which
  turns compilation off for the whole training step under JAX (measured on a GPU: 27 s against
  9 s an epoch); this layer compiles, and costs one bilinear resampling instead of two.

Both fill the border by reflection and sample bilinearly. They differ only at the pixel level:
one resampling is sharper than two, and the border is the reflection of the input image rather
than of the rotated one.
"""
import math

import keras
from keras import layers, ops

FLIP, ROTATION, ZOOM = "horizontal", 0.1, 0.2  # the chapter's


def chapter_augmentation(seed=None, flip=FLIP, rotation=ROTATION, zoom=ZOOM):
    """RandomFlip("horizontal"), RandomRotation(0.1), RandomZoom(0.2), as in the chapter.

    Args:
        seed: seed of the random layers (each gets its own, derived from it).
        flip, rotation, zoom: the layers' first arguments; ``None`` or 0 drops that layer.

    Returns:
        A ``keras.Sequential`` named ``data_augmentation``.
    """
    s = (lambda k: None) if seed is None else (lambda k: int(seed) * 7919 + k)
    parts = []
    if flip:
        parts.append(layers.RandomFlip(flip, seed=s(1)))
    if rotation:
        parts.append(layers.RandomRotation(rotation, seed=s(2)))
    if zoom:
        parts.append(layers.RandomZoom(zoom, seed=s(3)))
    return keras.Sequential(parts, name="data_augmentation")


@keras.saving.register_keras_serializable(package="smallvision")
class RandomChapterAugmentation(layers.Layer):
    """The chapter's flip, rotation and zoom as one batched, compilable transform.

    Per image: flipped left-right with probability 1/2 (``flip``), rotated by an angle uniform
    in ±``rotation`` turns, zoomed by a factor uniform in 1 ± ``zoom`` (above 1 samples a larger
    area: zoom out), all about the image's centre — Keras' layers' conventions, in their order
    (flip, then rotation, then zoom). Outside training it is the identity.

    Args:
        flip: apply the horizontal flip (the chapter: yes).
        rotation: the largest rotation, a fraction of a full turn (the chapter: 0.1, ±36°).
        zoom: the largest relative zoom (the chapter: 0.2).
        seed: seed of its generator (None: drawn from Python's generator, as Keras' layers do).
    """

    def __init__(self, flip=True, rotation=ROTATION, zoom=ZOOM, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.flip, self.rotation, self.zoom, self.seed = bool(flip), float(rotation), float(zoom), seed
        self.generator = keras.random.SeedGenerator(seed)
        self.supports_jit = True  # the point of this layer (Layer's default, said out loud)

    def draw(self, batch_size):
        """``(flipped, angle in radians, zoom factor)``, one of each per image, as tensors."""
        u = keras.random.uniform((batch_size, 3), seed=self.generator)
        flipped = ops.logical_and(ops.less_equal(u[:, 0], 0.5), self.flip)
        angle = (2.0 * u[:, 1] - 1.0) * (self.rotation * 2.0 * math.pi)
        factor = 1.0 + (2.0 * u[:, 2] - 1.0) * self.zoom
        return flipped, angle, factor

    def transforms(self, flipped, angle, factor, height, width):
        """Keras' 8-number projective transforms (output pixel -> input pixel), one per image:
        ``p_in = c + F R(angle) z (p_out - c)``, c the centre, F the flip, z the zoom factor."""
        sign = ops.where(flipped, -1.0, 1.0)
        cos, sin = ops.cos(angle) * factor, ops.sin(angle) * factor
        a0, a1, b0, b1 = sign * cos, -sign * sin, sin, cos
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        a2, b2 = cx - a0 * cx - a1 * cy, cy - b0 * cx - b1 * cy
        zeros = ops.zeros_like(a0)
        return ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)

    def call(self, images, training=None):
        if not training:
            return images
        shape = ops.shape(images)
        height, width = images.shape[1], images.shape[2]
        if height is None or width is None:
            height, width = ops.cast(shape[1], "float32"), ops.cast(shape[2], "float32")
        out = ops.image.affine_transform(ops.cast(images, "float32"),
                                         self.transforms(*self.draw(shape[0]), height, width),
                                         interpolation="bilinear", fill_mode="reflect")
        return ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "flip": self.flip, "rotation": self.rotation, "zoom": self.zoom,
                "seed": self.seed}
