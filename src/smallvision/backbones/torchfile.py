"""Read PyTorch weight files (``torch.save``, legacy non-zip format) into NumPy, without torch
and without running code from the file.

A legacy file is: a pickle of the magic number, one of the protocol version, one of system
info, the main pickle (tensors refer to storages by key, through ``persistent_load``), a
pickle of the storage keys in file order, then for each storage an 8-byte little-endian
element count and the raw bytes. The unpickler below resolves only the names a tensor
state dict needs (``collections.OrderedDict``, torch's tensor-rebuild functions and storage
types) — everything else is refused, the way ``torch.load(weights_only=True)`` restricts it.
"""
import collections
import pickle
import struct

import numpy as np

MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": None, "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class UnsafeFile(pickle.UnpicklingError):
    """The file asks for something a weights file never needs (and could run code)."""


class _Storage:
    def __init__(self, key, dtype, numel):
        self.key, self.dtype, self.numel = key, dtype, numel


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def _rebuild_tensor(storage, storage_offset, size, stride, *_):
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_):
    return data


class _StorageType:
    def __init__(self, name):
        if STORAGE_DTYPES.get(name) is None:
            raise UnsafeFile(f"unsupported storage type torch.{name}")
        self.dtype = np.dtype(STORAGE_DTYPES[name])


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, f):
        super().__init__(f)
        self.storages = {}

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeFile(f"refused to load {module}.{name}: a weights file needs only tensors")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise UnsafeFile(f"unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel, *view = pid
        if view and view[0] is not None:
            raise UnsafeFile("storage views are not supported")
        if not isinstance(storage_type, _StorageType):
            raise UnsafeFile(f"unexpected storage type {storage_type!r:.80}")
        storage = self.storages.setdefault(key, _Storage(key, storage_type.dtype, int(numel)))
        return storage


def _materialise(obj, arrays):
    if isinstance(obj, _Tensor):
        base = arrays[obj.storage.key]
        item = base.itemsize
        view = np.lib.stride_tricks.as_strided(base[obj.offset:], shape=obj.size,
                                               strides=tuple(s * item for s in obj.stride))
        return np.array(view)  # a compact copy, independent of the storage
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _materialise(v, arrays)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v, arrays) for v in obj)
    return obj


def load(path):
    """Load a legacy ``torch.save`` file of tensors as NumPy arrays (same nesting: dicts, lists).

    Raises:
        UnsafeFile: the file names anything but tensors and containers.
        ValueError: not a legacy PyTorch file (e.g. the zip format, or truncated).
    """
    with open(path, "rb") as f:
        try:
            magic = pickle.load(f)
        except Exception as e:
            raise ValueError(f"{path}: not a PyTorch legacy file ({e})") from None
        if magic != MAGIC:
            raise ValueError(f"{path}: not a PyTorch legacy file (magic number {magic!r:.40})")
        protocol = _safe_load(f)
        if protocol != 1001:
            raise ValueError(f"{path}: unsupported PyTorch protocol version {protocol}")
        _safe_load(f)  # sys info: endianness and type sizes
        unpickler = _Unpickler(f)
        result = unpickler.load()
        keys = _safe_load(f)
        arrays = {}
        for key in keys:
            storage = unpickler.storages.get(key)
            (numel,) = struct.unpack("<q", f.read(8))
            dtype = storage.dtype if storage else np.dtype(np.uint8)
            raw = f.read(numel * dtype.itemsize)
            if len(raw) != numel * dtype.itemsize:
                raise ValueError(f"{path}: truncated (storage {key} is cut short)")
            arrays[key] = np.frombuffer(raw, dtype=dtype)
    return _materialise(result, arrays)


def _safe_load(f):
    """A plain pickle of builtins only (the header pickles and the key list)."""
    return _NoGlobals(f).load()


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module, name):
        raise UnsafeFile(f"refused to load {module}.{name} in a header pickle")
