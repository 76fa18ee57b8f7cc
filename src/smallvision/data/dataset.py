"""The Dataset fed to ``model.fit()``: uint8 image batches from the decode cache, and labels.

A ``keras.utils.PyDataset`` (so it works on TensorFlow, JAX and PyTorch): seeded shuffle per
epoch, batching, optional per-sample class weights, and prefetch by Keras' worker threads.
Images stay uint8 until the model's own ``Rescaling`` layer: a batch of 32 at 180×180 is
3 MB instead of 12 MB.
"""
import math

import keras
import numpy as np

from ..labels import as_targets


CHEAP_ROW_BYTES = 64 * 1024


def is_cheap(images):
    """True when a batch of ``images`` is a plain memory copy of small rows (cached feature
    vectors, not images), so worker threads and small evaluation batches only add overhead."""
    if hasattr(images, "cheap"):
        return bool(images.cheap)
    shape, dtype = getattr(images, "shape", None), getattr(images, "dtype", None)
    if shape is None or dtype is None:
        return False
    return int(np.prod(shape[1:])) * np.dtype(dtype).itemsize <= CHEAP_ROW_BYTES


class ImageBatches(keras.utils.PyDataset):
    """``(images uint8 [B,H,W,3], labels[, sample_weights])`` batches.

    Args:
        images: an object with ``len()`` and ``take(indices)`` (a ``CachedImages`` or an array).
        labels: integer class per image.
        num_classes: 2 gives float labels of shape ``[B, 1]`` (sigmoid output), more gives
            integer labels ``[B]`` (softmax output).
        batch_size: images per batch.
        shuffle: reshuffle every epoch; the order of epoch ``e`` depends only on ``(seed, e)``,
            so a resumed run sees the same order it would have seen.
        seed: shuffle seed.
        class_weight: optional ``{class: weight}``, yielded as per-sample weights.
        epoch: the first epoch (for resuming).
        workers: Keras worker threads that prefetch batches (default: 2, or none for cheap rows,
            see :func:`is_cheap`).
    """

    def __init__(self, images, labels, num_classes, batch_size=32, shuffle=False, seed=0,
                 class_weight=None, epoch=0, workers=None, **kwargs):
        if workers is None:
            workers = 1 if is_cheap(images) else 2  # 1: batches made in the training loop, no threads
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=8, **kwargs)
        if len(images) != len(labels):
            raise ValueError(f"images and labels differ in length: {len(images)} != {len(labels)}")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.num_classes = num_classes
        self.batch_size = int(batch_size)
        self.shuffle, self.seed = shuffle, seed
        self.weights = None
        if class_weight:
            self.weights = np.array([class_weight[int(c)] for c in self.labels], dtype=np.float32)
        self.set_epoch(epoch)

    def set_epoch(self, epoch):
        self.epoch = epoch
        n = len(self.labels)
        self.order = (np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle
                      else np.arange(n))

    def __len__(self):
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, i):
        idx = self.order[i * self.batch_size:(i + 1) * self.batch_size]
        if not self.shuffle:
            idx = np.sort(idx)
        if isinstance(self.images, np.ndarray):
            x = self.images[idx]
        elif getattr(self.images, "per_epoch", False):  # e.g. one augmented view per image and epoch
            x = self.images.take(idx, self.epoch)
        else:
            x = self.images.take(idx)
        y = as_targets(self.labels[idx], self.num_classes)
        if self.weights is not None:
            return x, y, self.weights[idx]
        return x, y

    def on_epoch_end(self):
        if self.shuffle:
            self.set_epoch(self.epoch + 1)


def balanced_class_weight(labels, num_classes):
    """scikit-learn's "balanced" weights, n_samples / (n_classes * count per class), as {class: weight}
    (a class absent from ``labels`` gets weight 1: it never weighs a sample)."""
    from sklearn.utils.class_weight import compute_class_weight
    labels = np.asarray(labels)
    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    out = {c: 1.0 for c in range(num_classes)}
    out.update({int(c): float(w) for c, w in zip(present, weights)})
    return out
