"""novelty in predict and serve: each new run keeps its training embeddings and a threshold; the
embedding read from the features cache equals the network's; a photo of something else is
unknown; a run written before novelty predicts as before, without the fields."""
import csv
import json
import os
import shutil


import numpy as np
import pytest
from PIL import Image

from conftest import make_folder, shared_cache_dir
from smallvision import api, cli
from smallvision.inference import open_model, read_one
from smallvision.novelty import FILE, Novelty, embed_images, unit
from test_audit import varied_folder


class _Rows:
    def __init__(self, a):
        self.a = a

    def __len__(self):
        return len(self.a)

    def take(self, i):
        return self.a[i]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("novelty")
    data = varied_folder(root / "data", {"train": 24, "validation": 12, "test": 8}, seed=5)
    other = root / "temple.jpg"
    from sklearn.datasets import load_sample_image
    Image.fromarray(load_sample_image("china.jpg")).save(other)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SMALLVISION_CACHE", str(shared_cache_dir(tmp_path_factory)))
        run = api.train(data, "features", out=root / "runs", epochs=3, image_size=64, verbose=0, progress=False)
    return run, data, other, root


def test_the_cached_embedding_equals_the_network(trained):
    run, data, _, _ = trained
    nov = Novelty.load(run.path)
    assert nov is not None and nov.backbone == "efficientnet_lite0" and nov.layer == "efficientnet_lite0, pooled"
    assert nov.reference.shape == (48, 1280) and 0 < nov.threshold < 1
    opened = open_model(run.path)
    files = sorted(str(p) for p in (data / "train").glob("*/*.jpg"))
    emb, _ = embed_images(opened.model, nov.backbone, _Rows(np.stack([read_one(f, opened.spec) for f in files])))
    # every training image's embedding through the network is one of the cached rows (float16: 1e-3)
    assert (unit(emb) @ nov.reference.T).max(axis=1).min() > 0.999


def test_predict_adds_novelty_and_the_classes_stay_the_same(trained, tmp_path, capsys):
    run, data, other, _ = trained
    test = sorted(str(p) for p in (data / "test").glob("*/*.jpg"))
    rows = api.predict(run.path, test + [str(other)], progress=False)
    assert all(isinstance(r["novelty"], float) and isinstance(r["unknown"], bool) for r in rows)
    assert rows[-1]["unknown"] and rows[-1]["novelty"] > max(r["novelty"] for r in rows[:-1])
    assert sum(r["unknown"] for r in rows[:-1]) <= 1  # unseen bars and discs are not unknown
    old = tmp_path / "old-run"  # a run written before novelty: the same answers, no novelty fields
    shutil.copytree(run.path, old)
    os.remove(old / FILE)
    before = api.predict(str(old), test + [str(other)], progress=False)
    assert all("novelty" not in r for r in before)
    for a, b in zip(rows, before):
        assert a["class"] == b["class"] and a["probability"] == pytest.approx(b["probability"], abs=1e-5)
    out = tmp_path / "p.csv"
    assert cli.main(["predict", run.path, str(other), test[0], "--output", str(out)]) == 0
    table = list(csv.DictReader(open(out, encoding="utf-8")))
    assert list(table[0])[-2:] == ["novelty", "unknown"] and table[0]["unknown"] == "true"
    assert cli.main(["predict", str(old), str(other), "--output", str(tmp_path / "o.csv")]) == 0
    assert "novelty" not in open(tmp_path / "o.csv", encoding="utf-8").readline()
    capsys.readouterr()
    assert cli.main(["predict", run.path, str(other), test[0]]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert "UNKNOWN" in lines[0] and "UNKNOWN" not in lines[1] and "1 of 2 images look unlike" in captured.err
    # a damaged novelty file: classified as before, without the fields
    (old / FILE).write_bytes(b"not an npz")
    assert "novelty" not in api.predict(str(old), [str(other)], progress=False)[0]


def test_a_scratch_run_takes_the_layer_before_the_classifier(tmp_path):
    data = make_folder(tmp_path / "d", per_class=10, size=96)
    run = api.train(data, "scratch", out=tmp_path / "runs", epochs=1, image_size=96, verbose=0, progress=False)
    nov = Novelty.load(run.path)
    assert nov.backbone == "" and nov.layer == "the input of predictions" and nov.reference.shape[1] == 1024
    row = api.predict(run.path, [str(next((data / "bars").iterdir()))], progress=False)[0]
    assert "novelty" in row and row["class"] in ("bars", "discs")


@pytest.mark.slow
def test_serve_answers_the_same_fields(trained):
    pytest.importorskip("httpx")
    from starlette.testclient import TestClient
    run, data, other, _ = trained
    files = [other, sorted((data / "test" / "bars").iterdir())[0]]
    expected = api.predict(run.path, [str(f) for f in files], progress=False)
    client = TestClient(api.make_app(run.path, window=0.01))
    got = client.post("/predict", files=[("file", (f.name, f.read_bytes(), "image/jpeg")) for f in files]).json()
    for g, e in zip(got["predictions"], expected):
        assert g["unknown"] == e["unknown"] and g["novelty"] == pytest.approx(e["novelty"], abs=2e-3)
    assert got["predictions"][0]["unknown"] is True
    assert 'id="unknown"' in client.get("/").text


@pytest.mark.parametrize("runtime", ["auto", "keras"])
def test_a_model_it_cannot_tap_classifies_as_before(trained, monkeypatch, capsys, tmp_path, runtime):
    """Both ways: the run's model.onnx written on first use without the embedding output, and Keras."""
    import shutil

    import smallvision.novelty as novelty
    run, _, other, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run.path, copy, ignore=shutil.ignore_patterns("model.onnx", "labels.json"))
    monkeypatch.setenv("SMALLVISION_RUNTIME", runtime)

    def refuse(*a, **k):
        raise ValueError("not a chain of layers")
    monkeypatch.setattr(novelty, "with_embedding", refuse)
    row = api.predict(str(copy), [str(other)], progress=False)[0]
    assert "novelty" not in row and row["class"] in ("bars", "discs")
    assert "no novelty (ValueError: not a chain of layers)" in capsys.readouterr().err
    assert json.loads((copy / "labels.json").read_text()).get("embedding") is None if runtime == "auto" else \
        not (copy / "labels.json").exists()
