"""data split and data check on plain folders; the data verbs' command line."""
import json
import os

import pytest

from smallvision import api, cli
from smallvision.data.scan import scan
from smallvision.errors import SmallvisionError
from conftest import make_folder


def test_split_links_files_into_the_chapters_layout(tmp_path):
    data = make_folder(tmp_path / "photos", per_class=20)
    (data / "bars" / "broken.jpg").write_bytes(b"")
    out = tmp_path / "split"
    r = api.data_split(data, out, validation=0.25, test=0.25, seed=1, progress=False)
    assert r["placed_by"] == ["link"] and r["rejected"] == 1
    index = scan(out, progress=False)
    assert index.counts() == {"train": {"bars": 10, "discs": 10}, "validation": {"bars": 5, "discs": 5},
                              "test": {"bars": 5, "discs": 5}}
    f = sorted((out / "train" / "bars").iterdir())[0]
    assert os.stat(f).st_ino == os.stat(data / "bars" / f.name).st_ino  # a hard link, no copy
    manifest = (out / "MANIFEST.tsv").read_text().splitlines()
    assert len(manifest) == 41 and "broken.jpg" in (out / "REJECTED.tsv").read_text()
    again = api.data_split(data, tmp_path / "split2", validation=0.25, test=0.25, seed=1, progress=False)
    assert sorted(os.listdir(tmp_path / "split2" / "test" / "bars")) == sorted(os.listdir(out / "test" / "bars"))
    assert again["counts"] == r["counts"]


def test_split_refuses_what_would_lose_work(tmp_path):
    data = make_folder(tmp_path / "photos", per_class=5)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(SmallvisionError, match="not empty"):
        api.data_split(data, tmp_path / "busy", progress=False)
    presplit = make_folder(tmp_path / "presplit", splits={"train": 2, "test": 2})
    with pytest.raises(SmallvisionError, match="already has train/validation/test"):
        api.data_split(presplit, tmp_path / "out", progress=False)


def test_check_finds_leakage_and_imbalance(tmp_path, capsys):
    data = make_folder(tmp_path / "d", splits={"train": 8, "validation": 2, "test": 2})
    for i in range(30):
        (data / "train" / "bars" / f"extra{i}.jpg").write_bytes((data / "train" / "bars" / "bars.0.jpg").read_bytes()
                                                                if i == 0 else make_jpeg(i))
    leaked = sorted((data / "train" / "discs").iterdir())[0]
    (data / "test" / "discs" / "leak.jpg").write_bytes(leaked.read_bytes())
    assert cli.main(["data", "check", str(data), "--json", str(tmp_path / "c.json")]) == 0
    report = json.loads((tmp_path / "c.json").read_text())
    kinds = {d["kind"] for d in report["duplicates"]}
    assert "leakage across splits" in kinds
    assert any("imbalanced" in p for p in report["problems"])
    assert "problem: leakage across splits" in capsys.readouterr().out


def make_jpeg(seed):
    import io
    import numpy as np
    from PIL import Image
    from conftest import shape_image
    buf = io.BytesIO()
    Image.fromarray(shape_image(1, 64, np.random.default_rng(seed + 1000))).save(buf, "JPEG")
    return buf.getvalue()


def test_check_exit_code_when_nothing_is_usable(tmp_path, capsys):
    for c in ("a", "b"):
        (tmp_path / "d" / c).mkdir(parents=True)
        (tmp_path / "d" / c / "x.jpg").write_bytes(b"")
    assert cli.main(["data", "check", str(tmp_path / "d")]) == 1
    assert "0 usable images, 2 rejected" in capsys.readouterr().out


def test_data_get_from_the_command_line(tmp_path, capsys):
    from test_fetch import petimages_zip
    archive = tmp_path / "kagglecatsanddogs_x.zip"
    archive.write_bytes(petimages_zip())
    assert cli.main(["data", "get", "cats-vs-dogs", "--from", str(archive), "--to", str(tmp_path / "d"),
                     "--sizes", "3,2,2"]) == 0
    out = capsys.readouterr().out
    assert "train 6, validation 4, test 4; dropped 2 broken photos" in out


@pytest.mark.parametrize("what", ["get", "split", "check"])
def test_data_help(what, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["data", what, "--help"])
    assert e.value.code == 0 and "examples:" in capsys.readouterr().out
