"""Read PyTorch weight files (what ``torch.save`` writes) into NumPy, without torch and
without running code from the file.

Two formats, told apart by their first bytes:

* **zip** (``torch.save`` since PyTorch 1.6): ``<prefix>/data.pkl`` is the main pickle;
  tensors refer to storages by key through ``persistent_load``, and storage ``k``'s raw bytes
  are the member ``<prefix>/data/k``. No other member is unpickled.
* **legacy** (``_use_new_zipfile_serialization=False``): five pickles in a row — the magic
  number, the protocol version, system info, the main pickle, the storage keys in file
  order — then for each storage an 8-byte little-endian element count and the raw bytes.

*Every* pickle in either format is read by a restricted unpickler: the header pickles and
the key list may name no global at all; the main pickle only the names a tensor state dict
needs (``collections.OrderedDict``, torch's tensor-rebuild functions and storage types) —
everything else is refused before it is called, the way ``torch.load(weights_only=True)``
restricts it. Tensor views are bounds-checked against their storage, so a crafted offset or
stride cannot read outside it. The old tar format (PyTorch < 0.4) is refused.
"""
import collections
import io
import pickle
import struct
import zipfile

import numpy as np

MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class NotAWeightsFile(ValueError):
    """The file is not in a format this reader knows, or is cut short / inconsistent."""


class UnsafeFile(NotAWeightsFile):
    """The file asks for something a weights file never needs (and could run code)."""


def _dtype(name):
    kind = STORAGE_DTYPES[name]
    if kind == "bfloat16":
        import ml_dtypes  # a dependency of Keras and TensorFlow
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(kind)


class _Frozen:
    """Objects the unpickler makes: a pickle's BUILD opcode may not change them afterwards."""

    def __setstate__(self, state):
        raise UnsafeFile(f"a pickle tried to change a {type(self).__name__.strip('_').lower()} after building it")


class _Storage(_Frozen):
    def __init__(self, key, dtype, numel):
        self.key, self.dtype, self.numel = key, dtype, numel


class _Tensor(_Frozen):
    def __init__(self, storage, offset, size, stride):
        if not isinstance(storage, _Storage):
            raise UnsafeFile(f"a tensor built on {type(storage).__name__}, not on a storage")
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def _rebuild_tensor(storage, storage_offset, size, stride, *_):
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_):
    return data


class _StorageType(_Frozen):
    def __init__(self, name):
        self.name = name
        self.dtype = _dtype(name)


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    """The main pickle: tensors, containers, numbers and strings; storages by persistent id."""

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
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise UnsafeFile(f"unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel, *view = pid
        if view and view[0] is not None:
            raise UnsafeFile("storage views are not supported")
        if not isinstance(storage_type, _StorageType):
            raise UnsafeFile(f"unexpected storage type {storage_type!r:.80}")
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise UnsafeFile(f"malformed storage record {pid!r:.80}")
        storage = self.storages.setdefault(key, _Storage(key, storage_type.dtype, numel))
        if storage.dtype != storage_type.dtype:
            raise NotAWeightsFile(f"storage {key} is read as two different types")
        return storage


class _NoGlobals(pickle.Unpickler):
    """A header pickle or the key list: builtins only — no global, no persistent id."""

    def find_class(self, module, name):
        raise UnsafeFile(f"refused to load {module}.{name} in a header pickle")

    def persistent_load(self, pid):
        raise UnsafeFile("a persistent id in a header pickle")


def _ints(values, what):
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise UnsafeFile(f"tensor {what} must be non-negative integers. Received: {tuple(values)!r:.80}")


def _materialise(obj, arrays):
    if isinstance(obj, _Tensor):
        base = arrays[obj.storage.key]
        _ints(obj.size, "sizes")
        _ints(obj.stride, "strides")
        _ints((obj.offset,), "offset")
        if len(obj.size) != len(obj.stride):
            raise UnsafeFile(f"tensor has {len(obj.size)} sizes but {len(obj.stride)} strides")
        if 0 not in obj.size:  # the last element it addresses must lie inside the storage
            last = obj.offset + sum((n - 1) * s for n, s in zip(obj.size, obj.stride))
            if last >= len(base):
                raise UnsafeFile(f"tensor reads element {last} of a storage of {len(base)}")
        elif obj.offset > len(base):
            raise UnsafeFile(f"tensor starts at {obj.offset}, past a storage of {len(base)}")
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


def _storage_array(storage, raw):
    need = storage.numel * storage.dtype.itemsize
    if len(raw) != need:
        raise NotAWeightsFile(f"storage {storage.key} holds {len(raw)} bytes, its tensors need {need}")
    return np.frombuffer(raw, dtype=storage.dtype)


def _load_legacy(f, size):
    try:
        magic = _NoGlobals(f).load()
    except UnsafeFile:
        raise
    except Exception:  # random bytes fail here in many ways; none of them says more than this
        raise NotAWeightsFile("not a PyTorch weights file (neither torch.save's zip format nor its legacy "
                              "format)") from None
    if magic != MAGIC:
        raise NotAWeightsFile(f"not a PyTorch weights file (magic number {magic!r:.40})")
    protocol = _NoGlobals(f).load()
    if protocol != 1001:
        raise NotAWeightsFile(f"unsupported PyTorch protocol version {protocol!r:.40}")
    _NoGlobals(f).load()  # sys info: endianness and type sizes
    unpickler = _Unpickler(f)
    result = unpickler.load()
    keys = _NoGlobals(f).load()
    if not isinstance(keys, list):
        raise NotAWeightsFile("malformed storage key list")
    arrays = {}
    for key in keys:
        storage = unpickler.storages.get(key)
        (numel,) = struct.unpack("<q", f.read(8).ljust(8, b"\0"))
        if storage is None or numel != storage.numel:
            raise NotAWeightsFile(f"storage {key!r:.40} is not the one its tensors describe")
        if numel * storage.dtype.itemsize > size - f.tell():
            raise NotAWeightsFile(f"truncated (storage {key} is cut short)")
        arrays[key] = _storage_array(storage, f.read(numel * storage.dtype.itemsize))
    missing = set(unpickler.storages) - set(arrays)
    if missing:
        raise NotAWeightsFile(f"truncated (storages {sorted(missing)[:3]} missing)")
    return _materialise(result, arrays)


def _load_zip(f):
    with zipfile.ZipFile(f) as archive:
        names = archive.namelist()
        mains = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(mains) != 1:
            raise NotAWeightsFile(f"a zip archive with {len(mains)} data.pkl members; a torch.save file has one")
        prefix = mains[0][:-len("data.pkl")]
        if prefix + "byteorder" in names and archive.read(prefix + "byteorder") not in (b"little", b""):
            raise NotAWeightsFile("big-endian tensors are not supported")
        unpickler = _Unpickler(io.BytesIO(archive.read(mains[0])))
        result = unpickler.load()
        arrays = {}
        for key, storage in unpickler.storages.items():
            member = f"{prefix}data/{key}"
            try:
                info = archive.getinfo(member)
            except KeyError:
                raise NotAWeightsFile(f"storage {key!r:.40} has no member {member!r:.60}") from None
            if info.file_size != storage.numel * storage.dtype.itemsize:  # checked before reading it
                raise NotAWeightsFile(f"storage {key} holds {info.file_size} bytes, its tensors need "
                                      f"{storage.numel * storage.dtype.itemsize}")
            arrays[key] = _storage_array(storage, archive.read(info))
    return _materialise(result, arrays)


def load(path):
    """Load a ``torch.save`` file of tensors (zip or legacy format) as NumPy arrays, same nesting.

    Raises:
        UnsafeFile: the file names anything but tensors and containers (nothing of it runs).
        NotAWeightsFile: another format, truncated, or inconsistent. Both are ``ValueError``s
            whose message starts with the path.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(512)
            f.seek(0, 2)
            size = f.tell()
            f.seek(0)
            if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
                return _load_zip(f)
            if len(head) >= 262 and head[257:262] == b"ustar":
                raise NotAWeightsFile("the tar format of PyTorch < 0.4 is not supported; re-save it with a "
                                      "newer torch.save")
            return _load_legacy(f, size)
    except UnsafeFile as e:
        raise UnsafeFile(f"{path}: {e}") from None
    except NotAWeightsFile as e:
        raise NotAWeightsFile(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, struct.error, ValueError, TypeError,
            AttributeError, IndexError, KeyError, RecursionError, MemoryError) as e:
        raise NotAWeightsFile(f"{path}: not a readable PyTorch weights file ({type(e).__name__}: "
                              f"{str(e)[:80]})") from None
