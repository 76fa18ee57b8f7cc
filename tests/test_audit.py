"""smallvision audit: planted faults in a small synthetic set are found, the rest is left alone,
bad input is one line, and the page works in a browser."""
import csv
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import make_folder
from smallvision import api, cli
from smallvision.audit import ISSUES, Finding
from smallvision.errors import SmallvisionError

SIZE = 64


def varied_image(kind, rng, size=96):
    """A disc (kind 0) or a bar (kind 1) of random size, place and colour on a random smooth texture
    with blobs: unlike the suite's shape images, two of these are never nearly the same picture."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    field = np.asarray(Image.fromarray(rng.uniform(0, 255, (6, 6, 3)).astype(np.uint8)).resize((size, size),
                                                                                                 Image.BICUBIC))
    base = field.astype(np.float64)
    for _ in range(4):  # blobs
        cy, cx, r = rng.uniform(0, 1, 3)
        base += ((yy - cy) ** 2 + (xx - cx) ** 2 < (0.05 + 0.1 * r) ** 2)[..., None] * rng.uniform(-25, 25, 3)
    cy, cx = rng.uniform(0.35, 0.65, 2)
    r = rng.uniform(0.2, 0.3)
    mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2) if kind == 0 else \
        ((abs(yy - cy) < r / 3) & (abs(xx - cx) < r * 1.6))
    base[mask] = rng.uniform(0, 255, 3)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def varied_folder(root, splits, seed=0):
    rng = np.random.default_rng(seed)
    for split, n in splits.items():
        for ci, c in enumerate(("bars", "discs")):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(varied_image((ci + 1) % 2, rng)).save(d / f"{c}.{split}.{i}.jpg", quality=92)
    return root


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A split-layout set of bars and discs, with: a disc filed under bars (train), a shrunk
    re-encoded copy of a test bar put into train (a leak), a copy of a train disc within train
    (a near-copy), a photo of something else (scikit-learn's sample photo of a temple), a nearly
    black image, and a pipe and a truncated JPEG (the scan rejects those)."""
    root = varied_folder(tmp_path_factory.mktemp("planted") / "data", {"train": 14, "validation": 5, "test": 5})
    rng = np.random.default_rng(7)
    Image.fromarray(varied_image(0, rng)).save(root / "train" / "bars" / "wrong.jpg")  # a disc, filed as a bar
    src = sorted((root / "test" / "bars").iterdir())[0]
    with Image.open(src) as im:
        im.resize((80, 80)).save(root / "train" / "bars" / "leaked.jpg", quality=70)
    twin = sorted((root / "train" / "discs").iterdir())[0]
    with Image.open(twin) as im:
        im.crop((3, 3, 93, 93)).save(root / "train" / "discs" / "twin.jpg", quality=75)
    from sklearn.datasets import load_sample_image
    Image.fromarray(load_sample_image("china.jpg")).save(root / "validation" / "discs" / "other.jpg")  # a temple
    Image.fromarray(np.full((96, 96, 3), 8, np.uint8)).save(root / "test" / "discs" / "dark.png")
    os.mkfifo(root / "train" / "bars" / "pipe.jpg")
    (root / "train" / "discs" / "cut.jpg").write_bytes((root / "train" / "discs" / "twin.jpg").read_bytes()[:300])
    result = api.audit(root, out=tmp_path_factory.mktemp("out") / "audit", image_size=SIZE, progress=False)
    return root, result, src


def test_planted_faults_are_found(planted):
    root, result, src = planted
    by = {issue: {f.path: f for f in result.of(issue)} for issue in ISSUES}
    assert "train/bars/wrong.jpg" in by["label"] and by["label"]["train/bars/wrong.jpg"].suggested == "discs"
    leak = by["leak"].get(os.path.relpath(src, root).replace(os.sep, "/"))
    assert leak is not None and leak.other == "train/bars/leaked.jpg" and leak.split == "test<-train"
    assert [(f.path, f.other) for f in result.of("near_duplicate")] == [("train/discs/twin.jpg", sorted(
        p.relative_to(root).as_posix() for p in (root / "train" / "discs").iterdir()
        if p.name not in ("twin.jpg", "cut.jpg"))[0])] or any(f.path.endswith("twin.jpg") or f.other.endswith("twin.jpg")
                                                             for f in result.of("near_duplicate"))
    assert "validation/discs/other.jpg" in by["outlier"]
    assert "test/discs/dark.png" in by["quality"] and "dark" in by["quality"]["test/discs/dark.png"].detail
    # what was not planted is left alone: at most one other finding of each kind
    planted_paths = {"train/bars/wrong.jpg", "train/bars/leaked.jpg", "train/discs/twin.jpg",
                     "validation/discs/other.jpg", "test/discs/dark.png", leak.path}
    for issue in ISSUES:
        extra = [f for f in result.of(issue) if f.path not in planted_paths and f.other not in planted_paths]
        assert len(extra) <= 1, (issue, extra)
    assert result.images == 2 * 24 + 5  # the pipe and the truncated file are the scan's rejects


def test_the_csv_and_the_page(planted):
    _, result, _ = planted
    with open(result.csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == Finding.columns() and len(rows) == len(result.findings)
    order = [ISSUES.index(r["issue"]) for r in rows]
    assert order == sorted(order)
    for issue in ISSUES:  # worst first within each kind
        scores = [float(r["score"]) for r in rows if r["issue"] == issue]
        assert scores == sorted(scores, reverse=True)
    page = open(result.html, encoding="utf-8").read()
    assert "http://" not in page and "https://" not in page and "<script src" not in page  # self-contained
    assert page.count("data:image/jpeg;base64,") >= len(result.findings)  # a thumbnail each (two for a pair)
    for issue in ISSUES:
        assert f'id="{issue}"' in page
    text = result.summary()
    assert "label: " in text and "leak: " in text and result.html in text


def test_audit_from_the_command_line(planted, tmp_path, capsys):
    root, _, _ = planted
    assert cli.main(["audit", str(root), "--out", str(tmp_path / "a"), "--image-size", str(SIZE)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"audit of {root}") and "outlier: " in out and os.path.isfile(tmp_path / "a" / "audit.csv")


def one_error(err):
    """stderr ends in one "smallvision: error: ..." line and holds no traceback."""
    lines = err.strip().splitlines()
    return lines[-1].startswith("smallvision: error: ") and "Traceback" not in err and \
        sum(line.startswith("smallvision: error") for line in lines) == 1


def test_bad_input_is_one_line(tmp_path, capsys):
    data = make_folder(tmp_path / "d", per_class=2, size=32)
    with pytest.raises(SmallvisionError, match="inside the data folder"):
        api.audit(data, out=data / "audit", progress=False)
    with pytest.raises(SmallvisionError, match="no such data folder"):
        api.audit(tmp_path / "missing", progress=False)
    one = make_folder(tmp_path / "one", classes=("only",), per_class=3, size=32)
    assert cli.main(["audit", str(one), "--out", str(tmp_path / "o")]) == 2
    assert one_error(capsys.readouterr().err)
    # three images: too few to split, one line
    three = make_folder(tmp_path / "three", per_class=2, size=48)
    os.remove(sorted((three / "bars").iterdir())[0])
    assert cli.main(["audit", str(three), "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert one_error(err) and "too few images" in err
    # already split, with a class of one image: nothing to hold out for labels; the audit runs and says so
    small = make_folder(tmp_path / "small", size=48, splits={"train": 3, "validation": 1, "test": 1})
    for f in list((small / "train" / "bars").iterdir())[:2]:
        os.remove(f)
    result = api.audit(small, out=tmp_path / "s", image_size=SIZE, progress=False)
    assert result.images == 8 and result.of("label") == []
    assert any("class bars has only 3 images" in n for n in result.notes)


@pytest.mark.slow
def test_the_audit_page_in_a_real_browser(planted, tmp_path):
    from conftest import headless_chromium
    _, result, _ = planted
    browser = headless_chromium()
    try:
        browser.set_window_size(1280, 900)
        browser.get("file://" + result.html)
        assert browser.title.startswith("smallvision audit of")
        loaded = browser.execute_script("return [...document.images].map(i => i.complete && i.naturalWidth > 0)")
        assert loaded and all(loaded)
        page, view = browser.execute_script("return [document.documentElement.scrollWidth, "
                                            "document.documentElement.clientWidth]")
        assert page <= view
        pairs = browser.execute_script("return [...document.querySelectorAll('#gallery-leak .pair')]"
                                       ".map(d => d.querySelectorAll('img').length)")
        assert pairs and all(n == 2 for n in pairs)  # a copy is shown beside its original
        # decide: the leak removed, the wrong label relabelled as suggested; then the decisions file
        browser.execute_script("""
            const pick = (id, value) => { const s = document.querySelector(`#gallery-${id} select.decision`);
                                          s.value = value; s.dispatchEvent(new Event('change')); };
            pick('leak', 'remove-other'); pick('label', 'relabel:discs');""")
        assert browser.find_element("id", "chosen").text == "2"
        text = browser.execute_script("return decisionsCsv()")
    finally:
        browser.quit()
    rows = list(csv.DictReader(text.splitlines()))
    assert {(r["path"], r["action"], r["to"]) for r in rows} == {
        ("train/bars/leaked.jpg", "remove", ""), ("train/bars/wrong.jpg", "relabel", "discs")}
    root = tmp_path / "copy"  # applied to a copy: the module's data stays as planted
    shutil.copytree(result.data, root, ignore=lambda d, names: [n for n in names if n == "pipe.jpg"])
    (tmp_path / "decisions.csv").write_text(text)
    applied = api.data_apply(root, tmp_path / "decisions.csv")
    assert not applied.refused and len(applied.moves) == 2
    assert (root / "train" / "discs" / "wrong.jpg").is_file() and not (root / "train" / "bars" / "leaked.jpg").exists()


@pytest.mark.slow
def test_a_report_links_the_audit_and_lists_the_confused_pairs(planted, tmp_path):
    root, _, _ = planted
    # the pointer to the latest audit lives under the cache root: audit again under this test's
    result = api.audit(root, out=tmp_path / "audit", image_size=SIZE, progress=False)
    run = api.train(root, "features", out=tmp_path / "runs", epochs=1, image_size=SIZE, verbose=0, progress=False)
    page = open(api.report(run.path)["html"], encoding="utf-8").read()
    assert "An audit of this data" in page and f'<a href="file://{result.html}">{result.html}</a>' in page
    wrong = run.metrics.test.accuracy < 1
    assert ('id="confused"' in page) == wrong and ("Most-confused class pairs" in page) == wrong
    other = make_folder(tmp_path / "unaudited", size=48, splits={"train": 4, "validation": 2, "test": 2})
    run2 = api.train(other, "features", out=tmp_path / "runs2", epochs=1, image_size=SIZE, verbose=0, progress=False)
    assert "No audit of this data yet" in open(api.report(run2.path)["html"], encoding="utf-8").read()
