"""``features``: the chapter's feature extraction, method 1 — run the frozen pretrained conv
base once over every image, keep the features, train a small dense classifier on them.

Fast, no augmentation (2nd ed., VGG16: about 97 %). The frozen network runs through the CPU
inference runtime (:mod:`smallvision.runtime`), and its output is cached per image content
under the cache root (``features/<backbone>-<weights>-<decode>[-gap]/``, float16): the pooled
vector for a ``gap`` head (what the head needs, 49x smaller than Lite0's 7x7 map), the map
for ``flatten``. So a second run, another seed or another head starts instantly. The saved
``model.keras`` is the whole thing — frozen base and trained head — so it classifies images
like any other run's model.

This module also holds what ``features-augment`` caches: :func:`cached_views`, K augmented
views of every training image through the same frozen network.
"""
import contextlib
import hashlib
import os
import threading

import numpy as np

from . import pretrained
from .base import register


@register
class Features(pretrained.Pretrained):
    name = "features"
    summary = "pretrained conv base run once, cached features, dense classifier (RMSprop, 20 epochs)"
    default_epochs = 20
    chapter_figure = "≈97 %"

    def build(self, image_size, num_classes, seed, learning_rate, options):
        """The head alone, on the cached features (the chapter: Flatten, Dense 256, Dropout 0.5)."""
        return head_model(image_size, num_classes, learning_rate, options)

    def inputs(self, prep, options, progress=True, seed=0):
        return cached_features(prep, options, progress)

    def deploy_parts(self, model, spec, train_shas=None):
        """The cached extractor (pooled: a ``gap`` head) and the nested head of the published model:
        ``(fp32 ONNX, int8 ONNX or None, head)``."""
        o = spec.options
        if o.head != "gap":
            return None
        try:
            head = model.get_layer(f"{o.backbone}_{o.head}_head")
        except ValueError:
            return None
        int8 = Extractor(o, spec.image_size, calibration_tag=calibration_tag(train_shas) if train_shas else None)
        fp32 = Extractor(o.replace(precision="fp32"), spec.image_size)
        if fp32.cached_onnx() is None or (int8.int8 and (not train_shas or int8.cached_onnx() is None)):
            return None
        return fp32.cached_onnx(), int8.cached_onnx() if int8.int8 else None, head

    def image_model(self, head, spec, stage):
        """Frozen base + trained head: one model from uint8 images to probabilities."""
        import keras
        o, size = spec.options, spec.image_size
        images = keras.Input(shape=tuple(size) + (3,), name="image")
        x = pretrained.frozen_base(size, o)(images, training=False)
        if o.head == "gap":
            x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        return keras.Model(images, head(x), name=f"features_{o.backbone}")


HEAD_STEPS_PER_CALL = 16  # a head step on cached vectors is ~1 ms of work and ~10 ms of call overhead


def head_model(image_size, num_classes, learning_rate, o):
    """The head (``o.classifier``), compiled, on what :func:`extractor` gives (a pooled
    vector or a map)."""
    import keras
    inputs = keras.Input(shape=Extractor(o, image_size).shape, name="features")
    return pretrained.classifier(inputs, inputs, o, num_classes, learning_rate, name=f"{o.backbone}_{o.head}_head",
                                 steps_per_execution=HEAD_STEPS_PER_CALL)


class Extractor:
    """A frozen network whose output is cached, and how it is named.

    Args:
        options: the pretrained options (:class:`~.options.PretrainedOptions`: backbone, head, weights).
        image_size: its input size.
        part: "" for the whole base (pooled for a ``gap`` head), else a name for another output
            (fine-tuning: ``lower-<layer>``, the map that feeds the top block).
        build: ``build(weights: bool) -> keras.Model`` (uint8 images in); default :func:`extractor`.
        parts: for one network that fills several caches in one pass: their extractors, in the
            order their rows (flattened) are concatenated in this network's output.
        shape: one row's shape when the caller already knows it (else the network is built
            without weights to find it).
        prep: the prepared data (:func:`smallvision.data.prepare`): with ``precision="int8"`` the
            network is quantized, calibrated on its training images (:func:`calibration`).
    """

    def __init__(self, options, image_size, part="", build=None, parts=None, shape=None, prep=None,
                 calibration_tag=None):
        self.o = options
        self.size = tuple(image_size)
        self.part = part or ("gap" if options.head == "gap" else "")
        self._build = build or (lambda weights: extractor(self.size, self.o, weights=weights))
        self._weights = _weights_tag(options.weights)  # a weights file is hashed once, not per tag
        self.parts = list(parts) if parts else [self]
        self.int8 = getattr(options, "precision", "fp32") == "int8"
        self.calibration = calibration(prep) if self.int8 and prep is not None else \
            (None, calibration_tag) if self.int8 and calibration_tag else None
        if shape is not None:
            _SHAPES.setdefault((self.tag("", fp32=True), self.size), tuple(shape))

    def tag(self, input_key, fp32=False):
        """What a cached row depends on besides the image: backbone, weights, the input (decoding,
        or just the size for the exported network), the part of the network, and for int8 the
        calibration images (by content)."""
        if self.int8 and not fp32 and self.calibration is None:
            raise ValueError("precision int8 needs the training images to calibrate on (prep=)")
        return f"{self.o.backbone}-{self._weights}-{input_key}" + (f"-{self.part}" if self.part else "") + \
            (f"-int8-{self.calibration[1]}" if self.int8 and not fp32 else "")

    @property
    def shape(self):
        """One row's shape: kept beside the cache (``<cache root>/shapes/``), so that a warm run
        never builds the network to learn it; the first time, the network is built once,
        without weights."""
        from .._io import read_json, write_json_atomic
        from ..data.cache import default_cache_root
        key = (self.tag("", fp32=True), self.size)
        if key not in _SHAPES:
            path = os.path.join(default_cache_root(), "shapes", f"{key[0]}-{self.size[0]}x{self.size[1]}.json")
            try:
                _SHAPES[key] = tuple(int(n) for n in read_json(path)["shape"])
            except (OSError, ValueError, KeyError, TypeError):
                _SHAPES[key] = tuple(self._build(False).output_shape[1:])  # random state kept: frozen_base
                with contextlib.suppress(OSError):
                    write_json_atomic(path, {"shape": list(_SHAPES[key])})
        return _SHAPES[key]

    def _key(self):
        import keras
        h, w = self.size
        return f"{self.tag(f'{h}x{w}', fp32=True)}-keras{keras.__version__}"

    def cached_onnx(self):
        """The cached ONNX file of this network as its rows were computed (int8: the quantized one),
        or None when it is not in the cache."""
        from .. import runtime
        key = self._key() + (f"-int8-{self.calibration[1]}" if self.int8 else "")
        path = runtime.cache_path(key)
        return path if os.path.isfile(path) else None

    def runner(self, count):
        """The network through the CPU runtime (exported once per backbone/weights/size/part)."""
        from .. import runtime
        h, w = self.size
        key = self._key()
        what = f"{self.o.backbone} at {h}x{w}"
        if self.int8:
            return runtime.int8_runner(lambda: self._build(True), key, self.calibration, what=what)
        return runtime.frozen_runner(lambda: self._build(True), key, count=count, what=what)

    def store(self, kind, prep, cache_root=None):
        from ..data.cache import ArrayStore, default_cache_root
        return ArrayStore(os.path.join(cache_root or default_cache_root(), kind, self.tag(prep.spec.key)), self.shape,
                          np.float16)


_SHAPES = {}
CALIBRATION_IMAGES = 200  # training images int8 is calibrated on (measured: bench/RESULTS.md §15)


def calibration_choice(shas, n=CALIBRATION_IMAGES):
    """Which training images int8 is calibrated on: the ``n`` with the lowest sha256 (the same ones
    for the same data, whatever their order), in their order."""
    return sorted(sorted(range(len(shas)), key=lambda i: shas[i])[:n])


def calibration(prep, n=CALIBRATION_IMAGES):
    """``(images, tag)``: the calibration images (:func:`calibration_choice`) and a tag naming them
    by content (int8 caches are keyed by it)."""
    shas = [prep.index.entries[p].sha256 for p in prep.splits.train]
    chosen = calibration_choice(shas, n)
    return np.stack([prep.images["train"][i] for i in chosen]), calibration_tag(shas, n)


def calibration_tag(shas, n=CALIBRATION_IMAGES):
    """Names the calibration images of training images ``shas`` by their content, and how the
    weights are quantized ("-r7": 7-bit, on a CPU whose int8 kernels saturate:
    :func:`smallvision.runtime.int8_saturates`)."""
    import hashlib

    from .. import runtime
    digest = hashlib.sha256("".join(sorted(shas[i] for i in calibration_choice(shas, n))).encode()).hexdigest()[:10]
    return digest + ("-r7" if runtime.int8_saturates() else "")


def extractor(image_size, o, weights=True):
    """The frozen network whose output is cached: uint8 images -> the base's feature map, or its
    global average for a ``gap`` head (``o``: the pretrained options)."""
    import keras
    images = keras.Input(shape=tuple(image_size) + (3,), dtype="uint8", name="image")
    x = pretrained.frozen_base(image_size, o, weights=weights)(images)
    if o.head == "gap":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(images, x, name=f"{o.backbone}_{o.head}_features")


def _weights_tag(weights):
    if weights in (None, "imagenet"):
        return str(weights).lower()
    with open(weights, "rb") as f:
        return "file-" + hashlib.sha256(f.read()).hexdigest()[:12]


def _fill(stores, items, make_batch, ex, label, progress):
    """Run extractor ``ex`` over the rows of ``items`` ({key: anything make_batch needs}) that one
    of ``stores`` (one per part of ``ex``) lacks, and append them, 256 at a time (a killed run
    keeps every finished chunk). Returns the first store."""
    from ..progress import Progress
    from ..runtime import run_batches
    missing = [{k for k in items if k not in store} for store in stores]
    keys = [k for k in items if any(k in m for m in missing)]
    if keys:
        runner = ex.runner(len(keys))
        widths = np.cumsum([0] + [int(np.prod(p.shape)) for p in ex.parts])
        bar = Progress(label, len(keys), enabled=progress)
        with contextlib.ExitStack() as stack:
            writers = [stack.enter_context(store.writer()) for store in stores]
            for start in range(0, len(keys), 256):
                chunk = keys[start:start + 256]
                rows = run_batches(runner, make_batch([items[k] for k in chunk])).reshape(len(chunk), -1)
                for j, (part, writer) in enumerate(zip(ex.parts, writers)):
                    for k, row in zip(chunk, rows[:, widths[j]:widths[j + 1]].astype(np.float16)):
                        if k in missing[j]:
                            writer.put(k, row.reshape(part.shape))
                bar.update(len(chunk))
        bar.close()
        for store in stores:
            store.refresh()
    return stores[0]


def cached_features(prep, options, progress=True, cache_root=None, extractor=None):
    """{split: cached features} for every split, extracting only what the cache lacks
    (``extractor``: an :class:`Extractor`, default the whole base)."""
    ex = extractor or Extractor(options, (prep.spec.height, prep.spec.width), prep=prep)
    shas = {name: [prep.index.entries[p].sha256 for p in positions] for name, positions in prep.splits.items()}
    items = {}
    for name in shas:  # each image once, whatever split it is in
        for i, sha in enumerate(shas[name]):
            items.setdefault(sha, (name, i))
    store = _fill([p.store("features", prep, cache_root) for p in ex.parts], items,
                  lambda chunk: np.stack([prep.images[n][i] for n, i in chunk]), ex,
                  f"extracting {ex.o.backbone} features" + (f" ({ex.part})" if ex.part.startswith("lower") else ""),
                  progress)
    return {name: store.images(s) for name, s in shas.items()}


def cached_views(prep, options, views, progress=True, cache_root=None, split="train", extractor=None):
    """``views`` augmented views of every image of ``split`` through the frozen extractor, cached
    by image content, view number, augmentation and extractor (``views/chapter/<tag>/``), shared
    by every seed, head and run. Returns the rows ``[image * views + view]``."""
    from ..data.augment import chapter_view, view_rng
    ex = extractor or Extractor(options, (prep.spec.height, prep.spec.width), prep=prep)
    shas = [prep.index.entries[p].sha256 for p in getattr(prep.splits, split)]
    keys = [f"{sha}/{k}" for sha in shas for k in range(views)]
    items = {key: (i, k) for i, sha in enumerate(shas) for k, key in enumerate(keys[i * views:(i + 1) * views])}
    images = prep.images[split]

    def make_batch(chunk):
        return np.stack([chapter_view(images[i], view_rng(shas[i], 0, k)) for i, k in chunk])

    store = _fill([p.store(os.path.join("views", "chapter"), prep, cache_root) for p in ex.parts], items, make_batch,
                  ex, f"computing {views} augmented views x {len(shas)} images ({ex.o.backbone}"
                  + (f", {ex.part}" if ex.part.startswith("lower") else "") + ")", progress)
    return store.images(keys)


class ViewSet:
    """Training inputs drawn from cached views: in epoch ``e`` image ``i`` gets view
    ``(offset[i] + e) % views`` (offsets drawn from the seed), so every view is used before any
    is used twice."""

    per_epoch = True
    cheap = True

    def __init__(self, rows, views, seed):
        self.rows, self.views = rows, int(views)
        self.n = len(rows) // self.views
        self.offset = np.random.default_rng([int(seed), 17]).integers(0, self.views, size=self.n)

    def __len__(self):
        return self.n

    def take(self, indices, epoch=0):
        indices = np.asarray(indices)
        rows = indices * self.views + (self.offset[indices] + epoch) % self.views
        return self.rows[rows] if isinstance(self.rows, np.ndarray) else self.rows.take(rows)


class FreshViews:
    """The exact mode: a new augmented view of every image in every epoch (as the chapter's model
    does), each through the fast frozen extractor; nothing cached."""

    per_epoch = True
    cheap = False  # every batch runs the frozen network

    def __init__(self, prep, options, seed, split="train", extractor=None):
        self.ex = extractor or Extractor(options, (prep.spec.height, prep.spec.width), prep=prep)
        self.images = prep.images[split]
        self.shas = [prep.index.entries[p].sha256 for p in getattr(prep.splits, split)]
        self.seed = int(seed)
        self.runner = None
        self._lock = threading.Lock()  # Keras' worker threads ask for batches at the same time

    def __len__(self):
        return len(self.shas)

    def take(self, indices, epoch=0):
        from ..data.augment import chapter_view, view_rng
        from ..runtime import run_batches
        with self._lock:
            if self.runner is None:
                self.runner = self.ex.runner(None)
        batch = np.stack([chapter_view(self.images[i], view_rng(self.shas[i], 1, self.seed, epoch)) for i in indices])
        return run_batches(self.runner, batch).astype(np.float16)
