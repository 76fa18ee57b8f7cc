"""The chapter's data augmentation, as layers inside the model (they run on the device and
are active only in training; ``predict`` and ``evaluate`` see the images unchanged)."""
import keras
from keras import layers


def chapter_augmentation(seed=None, flip="horizontal", rotation=0.1, zoom=0.2):
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
