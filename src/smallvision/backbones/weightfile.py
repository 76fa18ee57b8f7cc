"""Weights files a user passes with ``--weights``: checked at the edge, read without running code.

Formats, told apart by content (not by the name):

* ``torch.save`` files, zip or legacy format — :mod:`.torchfile`'s restricted reader;
* ``.safetensors`` — Hugging Face's ``safetensors`` reader (a format made to be safe; the
  header is JSON, the rest raw tensor bytes);
* HDF5 (``.h5`` / ``.weights.h5``) — Keras weights for the ``keras.applications`` bases,
  loaded by Keras itself (HDF5 weights hold arrays, no code).

Every failure is a :class:`WeightsError` (a ``SmallvisionError``) whose one-line message
starts with the file's path and says what was wrong.
"""
import os
import stat

from ..errors import SmallvisionError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class WeightsError(SmallvisionError):
    """A weights file that cannot be used; the message names the file."""


def check_path(path):
    """A readable, non-empty regular file, or WeightsError. Returns the path as a string."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such weights file") from None
    except OSError as e:
        raise WeightsError(f"{path}: cannot read the weights file ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise WeightsError(f"{path}: is a folder; expected a weights file")
    if not stat.S_ISREG(st.st_mode):
        raise WeightsError(f"{path}: not a regular file (a pipe, socket or device); expected a weights file")
    if st.st_size == 0:
        raise WeightsError(f"{path}: empty file (0 bytes); expected a weights file")
    if not os.access(path, os.R_OK):
        raise WeightsError(f"{path}: cannot read the weights file (permission denied)")
    return path


def sniff(path):
    """"torch", "safetensors" or "hdf5", by the file's first bytes."""
    with open(path, "rb") as f:
        head = f.read(16)
        size = os.fstat(f.fileno()).st_size
    if head.startswith(HDF5_SIGNATURE):
        return "hdf5"
    if len(head) >= 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8:
        return "safetensors"
    return "torch"


def read_state(path):
    """The tensors of a torch or safetensors file as ``{name: numpy array}``.

    A checkpoint that wraps its state dict (``{"state_dict": ...}`` or ``{"model": ...}``) is
    unwrapped, and the ``module.`` prefix that ``DataParallel`` adds is dropped.
    """
    import numpy as np

    path = check_path(path)
    kind = sniff(path)
    if kind == "hdf5":
        raise WeightsError(f"{path}: a Keras HDF5 weights file; this backbone reads PyTorch (.pth) or "
                           ".safetensors weights")
    if kind == "safetensors":
        state = _read_safetensors(path)
    else:
        from .torchfile import NotAWeightsFile, UnsafeFile, load
        try:
            state = load(path)
        except UnsafeFile as e:
            raise WeightsError(f"{e} (refused; nothing in it was run)") from None
        except NotAWeightsFile as e:
            raise WeightsError(str(e)) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state:
        raise WeightsError(f"{path}: holds {type(state).__name__}, not a dictionary of named tensors")
    out = {}
    for name, value in state.items():
        if isinstance(name, str) and isinstance(value, np.ndarray):
            out[name[len("module."):] if name.startswith("module.") else name] = value
    if not out:
        raise WeightsError(f"{path}: holds no named tensors")
    return out


def _read_safetensors(path):
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise WeightsError(f"{path}: a .safetensors file; pip install safetensors to read it") from None
    try:
        return load_file(path)
    except Exception as e:
        raise WeightsError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0][:100]})") from None
