"""``export``: every format that installs here is written with labels.json, checked against the
run's Keras model on its validation images, and read back by ``predict`` (ONNX without
TensorFlow); a mismatch, a missing converter or a damaged export is a one-line error."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from smallvision import api, export as export_mod
from smallvision.errors import SmallvisionError
from conftest import tiny_run

FORMATS = [pytest.param(f, marks=pytest.mark.skipif(importlib.util.find_spec(m) is None, reason=f"{m} not installed"))
           for f, m in (("onnx", "onnxruntime"), ("openvino", "openvino"), ("saved_model", "tensorflow"),
                        ("litert", "tensorflow"))]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short features-augment run (augmentation layers in model.keras: what trips the converters)."""
    run, data, root = tiny_run(tmp_path_factory, "export", "features-augment", views=2)
    return dict(run=run, data=data, root=root)


def _by_path(rows):
    return {r["path"]: r for r in rows}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_matches_the_run_and_predict_reads_it(trained, tmp_path, fmt):
    run, data = trained["run"], trained["data"]
    result = api.export(run.path, format=fmt, out=tmp_path / fmt)
    assert result.checked == 8 and result.check_images == "validation"  # the run's 8 validation images
    assert result.max_difference <= export_mod.TOLERANCE and result.differing == 0
    assert sorted(os.listdir(tmp_path / fmt)) == sorted(["labels.json", export_mod.FORMATS[fmt].model_file, "predict.py"]
                                                         + (["model.bin"] if fmt == "openvino" else [])
                                                         + (["novelty.npz"] if fmt == "onnx" else []))
    assert result.client_checked == 8 and result.client_difference <= export_mod.TOLERANCE
    labels = json.loads((tmp_path / fmt / "labels.json").read_text())
    assert labels["class_names"] == ["bars", "discs"] and labels["format"] == fmt
    assert (labels["input"]["height"], labels["input"]["width"], labels["input"]["layout"]) == (64, 64, "NHWC")
    assert labels["output"]["meaning"] == "the probability of 'discs'; 'bars' is 1 - p"
    assert labels["source"]["run"] == run.name and labels["check"]["differing"] == 0
    assert str(tmp_path) not in json.dumps(labels) and os.path.dirname(run.path) not in json.dumps(labels)
    # predict on the export = predict on the run, image by image
    mine = _by_path(api.predict(str(tmp_path / fmt), [data], progress=False))
    theirs = _by_path(api.predict(run.path, [data], progress=False))
    assert mine.keys() == theirs.keys() and len(mine) == 32
    for path, row in mine.items():
        assert row["class"] == theirs[path]["class"], path
        assert row["probabilities"]["discs"] == pytest.approx(theirs[path]["probabilities"]["discs"], abs=1e-4)


def test_onnx_export_classifies_without_tensorflow(trained, tmp_path):
    run, data = trained["run"], trained["data"]
    out = tmp_path / "onnx"
    print(api.export(run.path, out=out).describe())
    # a fresh interpreter in which importing tensorflow, keras or jax fails: the CLI still predicts
    blocker = ("import sys, importlib.abc\n"
               "class Block(importlib.abc.MetaPathFinder):\n"
               "    def find_spec(self, name, path, target=None):\n"
               "        if name.split('.')[0] in ('tensorflow', 'keras', 'jax', 'torch'):\n"
               "            raise ImportError('blocked: ' + name)\n"
               "sys.meta_path.insert(0, Block())\n"
               "from smallvision.cli import main\n"
               "sys.exit(main(sys.argv[1:]))\n")
    target = tmp_path / "p.json"
    proc = subprocess.run([sys.executable, "-c", blocker, "predict", str(out), str(data), "--output", str(target)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = _by_path(json.loads(target.read_text()))
    theirs = _by_path(api.predict(run.path, [data], progress=False))
    assert len(rows) == 32 and all(rows[p]["class"] == theirs[p]["class"] for p in rows)


def test_export_refuses_what_it_cannot_do_and_writes_nothing(trained, tmp_path, monkeypatch):
    run = trained["run"]
    with pytest.raises(SmallvisionError, match="export format must be one of onnx, openvino, saved_model, litert"):
        api.export(run.path, format="tfjs")
    with pytest.raises(SmallvisionError, match="check-images must be a positive integer"):
        api.export(run.path, check_images=0)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    with pytest.raises(SmallvisionError, match=r"export --format openvino needs openvino \(pip install openvino\)"):
        api.export(run.path, format="openvino", out=tmp_path / "ov")
    monkeypatch.undo()

    class Off:  # an export that computes something slightly different
        def __init__(self, path, fmt):
            self.inner = real_open(path, fmt)
            self.dtype = np.float32

        def __call__(self, batch):
            return self.inner(batch) + 0.01

    real_open = export_mod.open_runner
    monkeypatch.setattr(export_mod, "open_runner", Off)
    with pytest.raises(SmallvisionError, match=r"the openvino export differs from the Keras model on validation "
                                               r"images \(max \|Δprobability\| 0.01 > 0.0001"):
        api.export(run.path, format="openvino", out=tmp_path / "bad")
    assert not (tmp_path / "bad").exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_a_damaged_export_is_a_one_line_error(trained, tmp_path):
    folder = tmp_path / "e"
    folder.mkdir()
    (folder / "labels.json").write_text("{not json")
    with pytest.raises(SmallvisionError, match=r"labels.json: not a smallvision labels.json \(JSONDecodeError"):
        api.predict(str(folder), [trained["data"]], progress=False)
    (folder / "labels.json").write_text(json.dumps({"format": "onnx", "class_names": ["a", "b"],
                                                    "input": {"height": 64, "width": 64}}))
    with pytest.raises(SmallvisionError, match=r"model.onnx: missing \(labels.json says format onnx\)"):
        api.predict(str(folder), [trained["data"]], progress=False)
    (folder / "model.onnx").write_bytes(b"\x08garbage")
    with pytest.raises(SmallvisionError, match="model.onnx: cannot be loaded"):
        api.predict(str(folder), [trained["data"]], progress=False)
