""""Unlike anything it was trained on": a novelty score for every image a run classifies.

A classifier answers one of its classes for any photo — "dogs, 96 %" for an astronaut. Each new
run therefore keeps ``novelty.npz``: the unit-length embeddings of its training images (at most
:data:`MAX_REFERENCE`, float16) and a threshold calibrated on validation. An image's score is the
mean cosine distance of its embedding to the :data:`NEIGHBOURS` nearest training embeddings (the
audit's outlier score); above the threshold — the :data:`QUANTILE` quantile of the validation
images' scores — it is ``unknown``.

The embedding: for a pretrained base, its pooled output (frozen bases read it from the features
cache, which equals the network's, tested); for a convnet trained from scratch, the input of its
last Dense layer (the layer before the classifier). Runs written before this have no
``novelty.npz`` and classify as before, without the two fields.
"""
import dataclasses
import os

import numpy as np

NEIGHBOURS = 10
QUANTILE = 0.99  # of the validation images' scores: ~1 % of unseen photos of the classes read as unknown
MAX_REFERENCE = 5000  # training embeddings kept (a random subset beyond)
FILE = "novelty.npz"


def neighbour_distance(x, reference, k=NEIGHBOURS, same=None, block=1024):
    """Mean cosine distance of each unit row of ``x`` to its ``k`` nearest rows of ``reference``;
    ``same[i]``: the index of row i itself in ``reference`` (left out), or -1."""
    k = max(1, min(k, len(reference) - (1 if same is not None else 0)))
    out = np.zeros(len(x))
    for start in range(0, len(x), block):
        d = 1 - x[start:start + block] @ reference.T
        if same is not None:
            rows = np.arange(d.shape[0])
            own = same[start:start + block]
            d[rows[own >= 0], own[own >= 0]] = np.inf
        out[start:start + block] = np.sort(np.partition(d, k - 1, axis=1)[:, :k], axis=1).mean(axis=1)
    return out


def unit(a):
    a = np.asarray(a, np.float32).reshape(len(a), -1)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


@dataclasses.dataclass(frozen=True)
class Novelty:
    """A run's reference embeddings and threshold."""

    reference: np.ndarray  # [m, d] unit rows (float16 on disk)
    threshold: float
    layer: str  # where the embedding is taken, in words
    backbone: str = ""  # the layer whose pooled output it is ("": the input of the last Dense layer)
    quantile: float = QUANTILE
    neighbours: int = NEIGHBOURS

    def rows(self, embeddings):
        """``[(score, unknown)]`` per embedding."""
        return [(round(float(v), 4), bool(v > self.threshold)) for v in self.scores(embeddings)]

    def scores(self, embeddings):
        return neighbour_distance(unit(embeddings), self.reference.astype(np.float32), self.neighbours)

    def save(self, path):
        from ._io import write_bytes_atomic
        import io
        buf = io.BytesIO()
        np.savez(buf, reference=self.reference.astype(np.float16), threshold=self.threshold, layer=self.layer,
                 backbone=self.backbone, quantile=self.quantile, neighbours=self.neighbours)
        write_bytes_atomic(path, buf.getvalue())

    @classmethod
    def load(cls, run_dir):
        """The run's novelty, or None (a run written before it, or a damaged file: no novelty fields)."""
        path = os.path.join(run_dir, FILE)
        if not os.path.isfile(path):
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(z["reference"].astype(np.float32), float(z["threshold"]), str(z["layer"]),
                           str(z["backbone"]), float(z["quantile"]), int(z["neighbours"]))
        except (OSError, ValueError, KeyError):
            return None


def split(out, n_classes, width, novelty=None):
    """A runner's joined output ``[probabilities | embedding]`` -> ``(probabilities, [(score,
    unknown)] or None)``; ``width``: the classifier's columns (the rest is the embedding)."""
    from .labels import as_probabilities
    out = np.asarray(out)
    if out.ndim == 1 or novelty is None or out.shape[1] <= width:
        return as_probabilities(out if out.ndim == 1 else out[:, :width], n_classes), None
    return as_probabilities(out[:, :width], n_classes), novelty.rows(out[:, width:])


def _graph(model, backbone=None):
    """``(input, the classifier's output, the embedding, where it is taken)``: ``model`` (a chain
    of layers, as every strategy builds it) called again on a new input, tapping the pooled output
    of the layer named ``backbone`` when it has one, else the input of its last Dense layer.
    (A nested model's own ``.output`` belongs to its inner graph, hence the new call.)"""
    import keras

    from .models.walk import is_augmentation, is_container, leaves
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)
              and not is_augmentation(layer)
              and not (is_container(layer) and leaves(layer) and all(map(is_augmentation, leaves(layer))))]
    names = [layer.name for layer in layers]
    dense = [k for k, layer in enumerate(layers) if isinstance(layer, keras.layers.Dense)]
    if not (backbone and backbone in names) and not dense:
        raise ValueError(f"{model.name}: no Dense layer and no backbone {backbone!r} to take an embedding from")
    tap = names.index(backbone) + 1 if backbone and backbone in names else dense[-1]
    x = inp = keras.Input(shape=model.input_shape[1:], dtype=model.inputs[0].dtype, name="novelty_image")
    emb = None
    for k, layer in enumerate(layers):
        if k == tap:
            emb = x
        x = layer(x)
    emb = x if emb is None else emb
    if len(emb.shape) == 4:
        emb = keras.layers.GlobalAveragePooling2D(name="novelty_pool")(emb)
    elif len(emb.shape) > 2:
        emb = keras.layers.Flatten(name="novelty_flatten")(emb)
    where = f"{backbone}, pooled" if backbone and backbone in names else f"the input of {layers[tap].name}"
    return inp, x, emb, where


def with_embedding(model, backbone=None):
    """A model with two outputs: ``model``'s (the probabilities) and the embedding, float32, without
    augmentation layers (the identity outside training); and the width of the first. The runners
    join the outputs of such a model into one array, ``[probabilities | embedding]``."""
    import keras
    inp, out, emb, _ = _graph(model, backbone)
    return keras.Model(inp, [keras.layers.Identity(name="probabilities")(keras.ops.cast(out, "float32")),
                             keras.layers.Identity(name="embedding")(keras.ops.cast(emb, "float32"))],
                       name=f"{model.name}_with_embedding"), int(out.shape[-1])


def embed_images(model, backbone, images, batch_size=64):
    """The embeddings of ``images`` (anything with len and take) through ``model``, and where they
    are taken."""
    import keras
    inp, _, emb, layer = _graph(model, backbone)
    net = keras.Model(inp, emb)
    rows = []
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images.take(np.arange(start, min(start + batch_size, len(images)))))
        rows.append(np.asarray(net.predict_on_batch(batch), np.float32))
    return (np.concatenate(rows) if rows else np.zeros((0, 1), np.float32)), layer


def _pooled_rows(store, chunk=512):
    """Cached base features, row by row, averaged over the positions when they are maps."""
    rows = []
    for start in range(0, len(store), chunk):
        a = np.asarray(store.take(np.arange(start, min(start + chunk, len(store)))), np.float32)
        rows.append(a.mean(axis=(1, 2)) if a.ndim == 4 else a.reshape(len(a), -1))
    return np.concatenate(rows) if rows else np.zeros((0, 1), np.float32)


def fit(run_dir, model, backbone, train, validation, pooled=None, seed=0):
    """Compute and save the run's :class:`Novelty` from ``model`` (the published image model).

    ``train``/``validation``: the decoded images; ``pooled``: ``{split: the frozen base's cached
    features}`` (pooled here when they are maps) to use instead of the network: the same numbers.
    """
    if pooled is not None:
        ref, val = (unit(_pooled_rows(pooled[name])) for name in ("train", "validation"))
        layer = f"{backbone}, pooled"
    else:
        ref, layer = embed_images(model, backbone, train)
        val, _ = embed_images(model, backbone, validation)
        ref, val = unit(ref), unit(val)
    if len(ref) > MAX_REFERENCE:
        ref = ref[np.sort(np.random.default_rng(seed).choice(len(ref), MAX_REFERENCE, replace=False))]
    if len(ref) < 2 or len(val) == 0:
        return None  # too few images to say what is unlike them
    k = min(NEIGHBOURS, len(ref))
    scores = neighbour_distance(val, ref, k)
    novelty = Novelty(ref, float(np.quantile(scores, QUANTILE)), layer, backbone if pooled is not None or
                      layer.endswith(", pooled") else "", QUANTILE, k)
    novelty.save(os.path.join(run_dir, FILE))
    return novelty
