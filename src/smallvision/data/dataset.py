"""The Dataset fed to ``model.fit()``: uint8 image batches from the decode cache, and labels.

A ``keras.utils.PyDataset`` (so it works on TensorFlow, JAX and PyTorch): seeded shuffle per
epoch, batching, optional per-sample class weights, and prefetch by Keras' worker threads.
Images stay uint8 until the model's own ``Rescaling`` layer: a batch of 32 at 180×180 is
3 MB instead of 12 MB.

On the TensorFlow backend :func:`fit_input` hands ``fit`` the same batches as a ``tf.data``
pipeline instead (:meth:`ImageBatches.tf_dataset`): Keras feeds a PyDataset through
``tf.data.Dataset.from_generator``, and measured here that costs as much again as a fine-tuning
step (top block of Lite0 on cached maps, 2,000 rows per epoch: 17-20 s per epoch as a
PyDataset, 9-10 s from ``tf.data``). Each batch is still made by :meth:`ImageBatches.batch`, so
both feeds give the same batches in the same order.
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
        devices: a :class:`~smallvision.distribute.Devices` (default: one). On several, every
            batch is padded to a multiple of their count with copies of its own images weighted
            0, the real images' weights scaled by padded/real — the loss and its gradient stay
            the mean over the real images, as on one device (Keras' "sum over batch size"
            divides by the padded count) — and weights are then yielded with every batch. With
            several processes, each yields its contiguous slice of every (padded) batch.
    """

    def __init__(self, images, labels, num_classes, batch_size=32, shuffle=False, seed=0,
                 class_weight=None, epoch=0, workers=None, devices=None, **kwargs):
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
        self.devices = devices
        last = len(self.labels) % self.batch_size
        self.padded = devices is not None and devices.count > 1 and \
            (devices.padded(self.batch_size) != self.batch_size or devices.padded(last) != last)
        self._last_order = None
        self.set_epoch(epoch)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def order(self, epoch):
        """The image order of ``epoch``: a function of (seed, epoch) only (the last one kept)."""
        last = self._last_order
        if last is not None and last[0] == epoch:
            return last[1]
        n = len(self.labels)
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        self._last_order = (epoch, order)  # one assignment: safe when two threads race here
        return order

    def __len__(self):
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, i):
        return self.batch(self.epoch, i)

    def batch(self, epoch, i):
        """Batch ``i`` of ``epoch``; a pure function of its arguments (safe from several threads)."""
        idx = self.order(epoch)[i * self.batch_size:(i + 1) * self.batch_size]
        if not self.shuffle:
            idx = np.sort(idx)
        weights = self.weights[idx] if self.weights is not None else None
        if self.padded:
            idx, weights = self._pad(idx, weights)
        if self.devices is not None and self.devices.processes > 1:
            k, processes = self.devices.process, self.devices.processes
            per = len(idx) // processes
            idx = idx[k * per:(k + 1) * per]
            weights = weights[k * per:(k + 1) * per] if weights is not None else None
        if isinstance(self.images, np.ndarray):
            x = self.images[idx]
        elif getattr(self.images, "per_epoch", False):  # e.g. one augmented view per image and epoch
            x = self.images.take(idx, epoch)
        else:
            x = self.images.take(idx)
        y = as_targets(self.labels[idx], self.num_classes)
        if weights is not None:
            return x, y, weights
        return x, y

    def _pad(self, idx, weights):
        """``idx`` padded to a multiple of the device count with its own first images, and the
        per-image weights that keep the batch's mean loss that of the real images."""
        n = len(idx)
        padded = self.devices.padded(n)
        weights = np.ones(n, dtype=np.float32) if weights is None else weights.astype(np.float32)
        if padded == n:
            return idx, weights
        extra = padded - n
        return (np.concatenate([idx, idx[np.arange(extra) % n]]),
                np.concatenate([weights * np.float32(padded / n), np.zeros(extra, dtype=np.float32)]))

    def on_epoch_end(self):
        if self.shuffle:
            self.set_epoch(self.epoch + 1)

    def tf_dataset(self):
        """One epoch of batches as a ``tf.data.Dataset``, each made by :meth:`batch` for the epoch
        set last (:meth:`set_epoch`; :func:`fit_input`'s callback sets it as each epoch begins),
        two at a time, prefetched. A new iterator per epoch (Keras makes one when it knows the
        number of batches and no ``steps_per_epoch`` is given), so no batch crosses an epoch."""
        import tensorflow as tf
        probe = self.batch(self.epoch, 0)

        def make(i):
            return self.batch(self.epoch, int(i))

        def batch_of(i):
            out = tf.numpy_function(make, [i], [tf.as_dtype(a.dtype) for a in probe], stateful=True)
            for t, a in zip(out, probe):
                t.set_shape((None,) + a.shape[1:])
            return tuple(out)

        ds = tf.data.Dataset.range(len(self)).map(batch_of, num_parallel_calls=2, deterministic=True)
        return ds.prefetch(4)


def fit_input(batches):
    """What ``model.fit``/``predict`` get for ``batches``, and the callbacks that go with it: on
    TensorFlow its :meth:`~ImageBatches.tf_dataset` and a callback that sets the epoch as each
    begins; on the other backends the PyDataset itself (Keras calls its ``on_epoch_end``)."""
    if keras.backend.backend() != "tensorflow" or len(batches) == 0:
        return batches, []
    return batches.tf_dataset(), [keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs=None: batches.set_epoch(epoch))]


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
