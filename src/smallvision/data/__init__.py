"""Data: scan -> split -> decode cache -> Dataset. Each step is one module; :func:`prepare`
runs the first three in order and hands the strategies cache views and labels per split."""
import dataclasses

import numpy as np

from ..checks import DEFAULT_SPLIT
from .cache import DecodeCache
from .decode import DecodeSpec
from .scan import scan as scan_folder
from .split import make_splits


@dataclasses.dataclass
class Prepared:
    index: object  # scan.Index
    splits: object  # split.Splits
    spec: DecodeSpec
    images: dict  # split name -> CachedImages
    labels: dict  # split name -> int array

    @property
    def class_names(self):
        return self.index.class_names

    def paths(self, split):
        return [self.index.entries[p].path for p in getattr(self.splits, split)]


def prepare(data, spec, fractions=DEFAULT_SPLIT, seed=0, cache_root=None, progress=True):
    """Scan ``data`` (decoding into the cache at ``spec``), split it, and view each split."""
    cache = DecodeCache(spec, cache_root)  # one store, filled by the scan and viewed below
    index = scan_folder(data, spec, cache_root=cache_root, progress=progress, cache=cache)
    splits = make_splits(index, fractions, seed)
    images, labels = {}, {}
    for name, positions in splits.items():
        entries = [index.entries[p] for p in positions]
        images[name] = cache.images([e.sha256 for e in entries])
        labels[name] = np.array([e.label for e in entries], dtype=np.int64)
    return Prepared(index, splits, spec, images, labels)


def with_validation_in_train(prep):
    """``prep`` with the validation images appended to train: what a refit's final model trains
    on. Validation and test stay as they are (the refit validates on nothing)."""
    train = list(prep.splits.train) + list(prep.splits.validation)
    cache = prep.images["train"].cache
    return dataclasses.replace(
        prep, splits=dataclasses.replace(prep.splits, train=train),
        images=dict(prep.images, train=cache.images([prep.index.entries[p].sha256 for p in train])),
        labels=dict(prep.labels, train=np.concatenate([prep.labels["train"], prep.labels["validation"]])))
