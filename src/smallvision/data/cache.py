"""The decode cache: uint8 images at one DecodeSpec, memory-mapped, keyed by content sha256
(and :class:`ArrayStore`, the same store for any fixed-shape array, e.g. backbone features).

Layout under the cache root (``$SMALLVISION_CACHE``, else ``$XDG_CACHE_HOME/smallvision``,
else ``~/.cache/smallvision``)::

    images/<spec.key>/<shard>.u8        raw rows of height*width*3 bytes
    images/<spec.key>/<shard>.json      the rows' sha256s, in order (the shard's commit record)

A shard is written once, by one writer, under a temporary name, and renamed into place;
its ``.json`` is renamed last. A shard without its record, or whose size disagrees with it,
is never read. So a killed decode loses only its own unfinished shard, and two processes
filling the same cache at once each add their own shard. Every run and strategy that asks
for the same image at the same spec reuses the same bytes.
"""
import json
import os
import threading
import uuid

import numpy as np

from .._io import write_json_atomic


def default_cache_root():
    root = os.environ.get("SMALLVISION_CACHE")
    if root:
        return root
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "smallvision")


class ArrayStore:
    """Fixed-shape arrays keyed by the sha256 of the image they come from, in memory-mapped
    shards under ``folder`` (see the module docstring for the layout and its safety)."""

    def __init__(self, folder, row_shape, dtype=np.uint8):
        self.dir = folder
        self.row_shape = tuple(int(v) for v in row_shape)
        self.dtype = np.dtype(dtype)
        self.row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize
        self._lock = threading.Lock()
        self._where = {}  # sha256 -> (shard name, row)
        self._maps = {}
        self.refresh()

    def refresh(self):
        """Read the committed shard records (cheap: a few JSON files)."""
        if not os.path.isdir(self.dir):
            return
        for name in sorted(os.listdir(self.dir)):
            if not name.endswith(".json") or name.startswith("."):
                continue
            shard = name[:-5]
            data = os.path.join(self.dir, shard + ".u8")
            try:
                with open(os.path.join(self.dir, name), encoding="utf-8") as f:
                    shas = json.load(f)["sha256"]
                if os.path.getsize(data) != len(shas) * self.row_bytes:
                    continue  # damaged or foreign: ignore, the images get decoded again
            except (OSError, ValueError, KeyError):
                continue
            for row, sha in enumerate(shas):
                self._where.setdefault(sha, (shard, row))

    def __contains__(self, sha):
        return sha in self._where

    def __len__(self):
        return len(self._where)

    def writer(self):
        return _ShardWriter(self)

    def _map(self, shard):
        m = self._maps.get(shard)
        if m is None:
            with self._lock:
                m = self._maps.get(shard)
                if m is None:
                    path = os.path.join(self.dir, shard + ".u8")
                    n = os.path.getsize(path) // self.row_bytes
                    m = np.memmap(path, dtype=self.dtype, mode="r", shape=(n,) + self.row_shape)
                    self._maps[shard] = m
        return m

    def images(self, shas):
        """A read-only view of the given images, in the given order."""
        missing = [s for s in shas if s not in self._where]
        if missing:
            raise KeyError(f"{len(missing)} images are not in the cache {self.dir}")
        return CachedImages(self, [self._where[s] for s in shas])


class DecodeCache(ArrayStore):
    """All images decoded at one :class:`~smallvision.data.decode.DecodeSpec` (uint8 H x W x 3)."""

    def __init__(self, spec, root=None):
        self.spec = spec
        self.root = root or default_cache_root()
        super().__init__(os.path.join(self.root, "images", spec.key), spec.shape, np.uint8)


class CachedImages:
    """``len()`` and ``take(indices) -> (n, H, W, 3) uint8`` over cached rows."""

    def __init__(self, cache, locations):
        self.cache = cache
        shards = sorted({s for s, _ in locations})
        self._maps = [cache._map(s) for s in shards]
        pos = {s: i for i, s in enumerate(shards)}
        self.shard = np.array([pos[s] for s, _ in locations], dtype=np.int32)
        self.row = np.array([r for _, r in locations], dtype=np.int64)
        self.shape = (len(locations),) + cache.row_shape
        self.dtype = cache.dtype

    def __len__(self):
        return self.shape[0]

    def take(self, indices):
        indices = np.asarray(indices)
        if len(self._maps) == 1:
            return np.asarray(self._maps[0][self.row[indices]])
        out = np.empty((len(indices),) + self.shape[1:], dtype=self.cache.dtype)
        for j, i in enumerate(indices):
            out[j] = self._maps[self.shard[i]][self.row[i]]
        return out

    def __getitem__(self, i):
        return np.asarray(self._maps[self.shard[i]][self.row[i]])


class _ShardWriter:
    """Appends decoded images to one new shard; commits it on close (thread-safe put)."""

    def __init__(self, cache):
        self.cache = cache
        self.name = f"{uuid.uuid4().hex}"
        self.shas = []
        self._seen = set()
        self._f = None
        self._lock = threading.Lock()

    def put(self, sha, array):
        if array.shape != self.cache.row_shape or array.dtype != self.cache.dtype:
            raise ValueError(f"expected {self.cache.dtype} {self.cache.row_shape}, received {array.dtype} {array.shape}")
        with self._lock:
            if sha in self._seen or sha in self.cache:
                return
            if self._f is None:
                os.makedirs(self.cache.dir, exist_ok=True)
                self._tmp = os.path.join(self.cache.dir, f".tmp-{self.name}.u8")
                self._f = open(self._tmp, "wb")
            self._f.write(np.ascontiguousarray(array).tobytes())
            self.shas.append(sha)
            self._seen.add(sha)

    def close(self):
        """Commit the rows written so far; if even that fails (disk full), leave no trace."""
        if self._f is None:
            return
        f, self._f = self._f, None
        try:
            f.flush()
            f.truncate(len(self.shas) * self.cache.row_bytes)  # drop a row cut short by an error
            # No fsync: the rename order already protects against a killed process, which is the
            # failure that matters here, and syncing ~0.5 GB took a fifth of a cold load.
            f.close()
            os.replace(self._tmp, os.path.join(self.cache.dir, self.name + ".u8"))
            write_json_atomic(os.path.join(self.cache.dir, self.name + ".json"), {"sha256": self.shas},
                              compact=True)
        except OSError:
            for path in (self._tmp, os.path.join(self.cache.dir, self.name + ".u8")):
                if os.path.exists(path):
                    os.unlink(path)
            if not f.closed:
                try:
                    f.close()
                except OSError:
                    pass
        self.cache.refresh()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        # Keep what was decoded even when interrupted (Ctrl-C, a later error): the rows are whole.
        self.close()
