"""smallvision curve: the points, the files, the fit (on a known curve), and bad input."""
import os

import numpy as np
import pytest

from conftest import make_folder
from smallvision import api, cli
from smallvision.curve import Point, extrapolate
from smallvision.errors import SmallvisionError
from test_audit import one_error, varied_folder

SIZE = 64


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    data = varied_folder(tmp_path_factory.mktemp("curve") / "data", {"train": 24, "validation": 4, "test": 10}, seed=3)
    return api.curve(data, out=tmp_path_factory.mktemp("out") / "curve", image_size=SIZE, sizes=4, seeds=3,
                     progress=False)


def test_the_points_and_the_files(measured):
    r = measured
    assert [p.size for p in r.points] == sorted({p.size for p in r.points}) and r.points[-1].size == 24
    assert r.points[0].size == 5 and r.points[-1].images == 48 and r.evaluated_on == "test"
    assert all(len(p.accuracies) == 3 and all(0 <= a <= 1 for a in p.accuracies) for p in r.points)
    assert len(set(r.points[-1].accuracies)) == 1  # every training image: the draws are the same fit
    assert r.points[-1].mean > 0.7  # bars and discs are told apart from the features
    assert [q.size for q in r.predictions] == [48, 96]
    assert all(q.low <= q.accuracy <= q.high <= 1 for q in r.predictions)
    lines = open(r.files["csv"], encoding="utf-8").read().splitlines()
    assert lines[0] == "size,seed,images,accuracy" and len(lines) == 1 + 3 * len(r.points)
    md = open(r.files["md"], encoding="utf-8").read()
    assert "| images per class |" in md and "predicted" in md and "![curve](curve.png)" in md
    page = open(r.files["html"], encoding="utf-8").read()
    assert "data:image/png;base64," in page and "http" not in page.replace(r.data, "")
    assert open(r.files["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert "per class" in r.summary() and "predicted" in r.summary()


def test_the_fit_finds_a_known_curve():
    """Draws around a known power law with a floor: the prediction at 20x the largest fitted size is
    close, and its interval holds the truth; a plain power law too."""
    rng = np.random.default_rng(0)
    sizes = [5, 10, 20, 50]
    for truth in (lambda n: 0.2 * n ** -0.5 + 0.01, lambda n: 0.15 * n ** -0.4):
        points = [Point(n, 2 * n, tuple(1 - truth(n) + rng.normal(0, 0.002, 5))) for n in sizes]
        q = extrapolate(points, 20000, [1000])[0]
        assert abs(q.accuracy - (1 - truth(1000))) < 0.005 and q.low <= 1 - truth(1000) <= q.high, q


def test_from_the_command_line(measured, tmp_path, capsys):
    out = tmp_path / "c"
    assert cli.main(["curve", measured.data, "--out", str(out), "--image-size", str(SIZE), "--sizes", "4",
                     "--seeds", "2", "--fit-up-to", "15", "--predict", "24,100"]) == 0
    text = capsys.readouterr().out
    assert "100 per class" in text and "fitted on sizes up to 14" in text and (out / "curve.html").is_file()


def test_bad_input_is_one_line(tmp_path, measured, capsys):
    one = make_folder(tmp_path / "one", classes=("only",), per_class=3, size=32)
    assert cli.main(["curve", str(one), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "only one class" in err
    small = make_folder(tmp_path / "small", size=48, splits={"train": 3, "validation": 1, "test": 1})
    for f in list((small / "train" / "bars").iterdir())[:2]:
        f.unlink()
    with pytest.raises(SmallvisionError, match="too few images for a curve"):
        api.curve(small, out=tmp_path / "s", image_size=SIZE, progress=False)
    with pytest.raises(SmallvisionError, match="inside the data folder"):  # the next scan would see a class
        api.curve(measured.data, out=os.path.join(measured.data, "curve"), progress=False)
    with pytest.raises(SmallvisionError, match="leaves 1 sizes to fit"):
        api.curve(measured.data, out=tmp_path / "f", image_size=SIZE, sizes=4, fit_up_to=5, progress=False)
    for bad in (["--sizes", "0"], ["--seeds", "-1"], ["--predict", "x"]):
        code = cli.main(["curve", measured.data, *bad]) if bad[0] != "--predict" else None
        if code is None:
            with pytest.raises(SystemExit):
                cli.main(["curve", measured.data, *bad])
        else:
            assert code == 2
    assert "Received" in capsys.readouterr().err


def test_hostile_files_are_skipped_and_three_images_are_one_line(tmp_path, capsys):
    import os
    data = varied_folder(tmp_path / "h", {"train": 6, "test": 3}, seed=9)
    os.mkfifo(data / "train" / "bars" / "pipe.jpg")
    (data / "train" / "discs" / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 20)
    r = api.curve(data, out=tmp_path / "o", image_size=SIZE, sizes=3, seeds=2, progress=False)
    os.remove(data / "train" / "bars" / "pipe.jpg")
    os.remove(data / "train" / "discs" / "cut.jpg")
    clean = api.curve(data, out=tmp_path / "c", image_size=SIZE, sizes=3, seeds=2, progress=False)
    assert r.points == clean.points  # the pipe and the truncated file were the scan's rejects, nothing else
    three = make_folder(tmp_path / "three", per_class=2, size=48)
    os.remove(sorted((three / "bars").iterdir())[0])
    assert cli.main(["curve", str(three), "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert one_error(err) and "too few images" in err
