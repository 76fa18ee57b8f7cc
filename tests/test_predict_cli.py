"""predict (API and CLI) and the command line's manners."""
import csv
import json
import subprocess
import sys

import pytest

from smallvision import api, cli
from smallvision.data.demo import write_digits


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import make_folder
    root = tmp_path_factory.mktemp("predict")
    data = make_folder(root / "data", per_class=16)
    run = api.train(data, "scratch", out=root / "runs", epochs=1, image_size=80, verbose=0, progress=False)
    return data, run


def test_predict_a_folder_with_a_broken_file(trained, tmp_path):
    data, run = trained
    new = tmp_path / "new"
    new.mkdir()
    for f in sorted((data / "bars").iterdir())[:3]:
        (new / f.name).write_bytes(f.read_bytes())
    (new / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (new / "notes.txt").write_text("ignored: not an image name")
    rows = api.predict(run.path, [new])
    expected = sorted(f.name for f in (data / "bars").iterdir())[:3] + ["broken.jpg"]
    assert [r["path"].rsplit("/", 1)[-1] for r in rows] == sorted(expected)
    bad = rows[-1]
    assert bad["class"] is None and bad["error"]
    for r in rows[:3]:
        assert r["class"] in ("bars", "discs") and r["error"] is None
        assert abs(sum(r["probabilities"].values()) - 1) < 1e-4
        assert r["probability"] == max(r["probabilities"].values())


def test_predict_applies_the_training_preprocessing(trained):
    """Same pixels in, same probabilities out: predict on a file equals the model on its cached decode."""
    import keras
    from smallvision.data.decode import DecodeSpec
    from smallvision.data.imagefile import read_image
    data, run = trained
    f = sorted((data / "discs").iterdir())[0]
    [row] = api.predict(run.path, [f])
    model = keras.saving.load_model(run.model_path)
    p = float(model.predict(read_image(f, DecodeSpec(80, 80))[0][None], verbose=0)[0, 0])
    assert row["probabilities"]["discs"] == pytest.approx(p, abs=1e-5)


def test_predict_a_bare_model_file_and_globs(trained):
    data, run = trained
    rows = api.predict(run.model_path, [str(data / "bars" / "*.jpg")])
    assert len(rows) == 16 and rows[0]["class"] in ("bars", "discs")


def test_cli_predict_writes_csv_and_json(trained, tmp_path, capsys):
    data, run = trained
    out_csv, out_json = tmp_path / "p.csv", tmp_path / "p.json"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff")
    assert cli.main(["predict", run.path, str(data / "discs"), str(broken), "--output", str(out_csv)]) == 0
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 17 and rows[-1]["error"].startswith("not an image")
    assert set(rows[0]) == {"path", "class", "probability", "p_bars", "p_discs", "error", "novelty", "unknown"}
    assert rows[-1]["novelty"] == rows[-1]["unknown"] == ""  # a file that could not be read: no score
    missing = str(tmp_path / "missing.jpg")  # a path that names nothing: an error before any work
    assert cli.main(["predict", run.path, str(data / "discs"), missing, "--output", str(tmp_path / "m.csv")]) == 2
    assert f"{missing}: no such file or folder" in capsys.readouterr().err and not (tmp_path / "m.csv").exists()
    assert cli.main(["predict", run.path, str(data / "discs"), "--output", str(out_json)]) == 0
    assert len(json.loads(out_json.read_text())) == 16


def test_user_mistakes_are_one_line_errors(tmp_path, capsys):
    assert cli.main(["train", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("smallvision: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert cli.main(["predict", str(tmp_path), "x.jpg"]) == 2
    assert "not a smallvision run folder" in capsys.readouterr().err
    assert cli.main(["train"]) == 2


VERBS = ["demo", "scan", "train", "ladder", "report", "predict", "export", "serve", "explain", "strategies",
         "backbones", "data"]


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help_with_examples(verb, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([verb, "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "examples:" in out and f"smallvision {verb}" in out


def test_python_dash_m_runs_the_cli():
    """The one place the process boundary is what is tested: `python -m smallvision`."""
    out = subprocess.run([sys.executable, "-m", "smallvision", "strategies"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "finetune" in out.stdout


def test_cli_scan_reports_and_writes(tmp_path, capsys):
    from conftest import make_folder
    data = make_folder(tmp_path / "d", per_class=5)
    (data / "bars" / "empty.jpg").write_bytes(b"")
    assert cli.main(["scan", str(data), "--write", str(tmp_path / "r")]) == 0
    out = capsys.readouterr()
    assert "10 images in 2 classes (bars, discs), 1 rejected" in out.err
    assert "rejected bars/empty.jpg: empty file (0 bytes)" in out.err
    assert "empty file" in (tmp_path / "r" / "rejects.csv").read_text()


def test_demo_data_is_the_digits_as_class_folders(tmp_path):
    folder = write_digits(tmp_path / "digits")
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == [str(d) for d in range(10)]
    assert sum(1 for _ in folder.glob("*/*.png")) == 1797


@pytest.mark.slow
def test_demo_compares_scratch_and_features_in_a_ladder_report(tmp_path, capsys):
    """The main job's path, shortened (1 epoch each): a ladder of the two, its report, predictions."""
    assert cli.main(["demo", "--out", str(tmp_path / "demo"), "--epochs-scale", "0.01", "--image-size", "80"]) == 0
    out = capsys.readouterr()
    assert "scratch" in out.out and "features" in out.out
    assert (tmp_path / "demo" / "ladder" / "report.html").is_file()
    shown = [line for line in out.err.splitlines() if line.startswith("predict (")]
    assert 10 <= len(shown) <= 11  # one test image of each digit, then the worst mistake if any
    assert sorted(line.split("/")[-2] for line in shown[:10]) == [str(d) for d in range(10)]
    assert len(shown) == 10 or "  <- a mistake: it is " in shown[-1]  # the worst mistake says so


def test_the_demo_shows_one_image_per_class_and_the_worst_mistake():
    from smallvision.demo import showcase
    row = lambda path, true, predicted, loss, split="test": dict(path=path, split=split, true=true,
                                                              predicted=predicted, loss=loss)
    rows = [row("c/1.png", "cat", "cat", 0.1), row("c/2.png", "cat", "dog", 2.0), row("c/3.png", "cat", "dog", 0.9),
            row("d/1.png", "dog", "dog", 0.2), row("d/0.png", "dog", "cat", 9.0, split="validation")]
    assert [r["path"] for r in showcase(rows, ["dog", "cat"])] == ["d/1.png", "c/1.png", "c/2.png"]
    rows[0]["predicted"], rows[0]["loss"] = "dog", 5.0  # the first cat is now also the worst mistake: shown once
    assert [r["path"] for r in showcase(rows, ["dog", "cat"])] == ["d/1.png", "c/1.png"]
    right = [r for r in rows if r["predicted"] == r["true"]]
    assert [r["path"] for r in showcase(right, ["cat", "dog"])] == ["d/1.png"]  # no mistake: no extra row
