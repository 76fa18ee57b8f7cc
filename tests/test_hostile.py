"""The data people really have: a corpus of awkward and broken files, generated here. For each,
what the scan reports; then training on the folder works on the good files."""
import io
import os

import numpy as np
import pytest
from PIL import Image

from smallvision import api, cli
from smallvision.data.scan import scan
from conftest import shape_image


def photo(seed, size=96):
    return Image.fromarray(shape_image(seed % 2, size, np.random.default_rng(seed)))


def save(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture
def corpus(tmp_path):
    """Two class folders (names with spaces) full of everything that trips loaders up."""
    root = tmp_path / "corpus"
    cats, dogs = root / "tabby cats", root / "big dogs"
    for d in (cats, dogs, dogs / "nested" / "deeper"):
        d.mkdir(parents=True)
    for i in range(6):
        photo(i).save(cats / f"good{i}.jpg", "JPEG")
        photo(100 + i).save(dogs / f"good{i}.jpg", "JPEG")
    full = save(photo(50), "JPEG")
    files = {
        "truncated.jpg": full[: len(full) // 2],
        "empty.jpg": b"",
        "notes.jpg": b"shopping list: milk, eggs\n",
        "png-named.jpg": save(photo(51), "PNG"),
        "anim.gif": save(photo(52).convert("P"), "GIF", save_all=True, append_images=[photo(53).convert("P")]),
        "photo.webp": save(photo(54), "WEBP"),
        "photo.bmp": save(photo(55), "BMP"),
        "photo.tiff": save(photo(56), "TIFF"),
        "deep.png": save(Image.fromarray((np.arange(96 * 96).reshape(96, 96) * 7 % 65536).astype(np.uint16)), "PNG"),
        "cmyk.jpg": save(photo(57).convert("CMYK"), "JPEG"),
        "grey.jpg": save(photo(58).convert("L"), "JPEG"),
        "palette.png": save(photo(59).convert("P"), "PNG"),
        "rgba.png": save(photo(60).convert("RGBA"), "PNG"),
        "one-pixel.png": save(Image.new("RGB", (1, 1), "red"), "PNG"),
        "ünïcödé.jpg": save(photo(61), "JPEG"),
    }
    exif = Image.Exif()
    exif[0x0112] = 6
    files["rotated.jpg"] = save(photo(62), "JPEG", exif=exif)
    for name, data in files.items():
        (dogs / name).write_bytes(data)
    (dogs / "nested" / "deeper" / "inside.jpg").write_bytes(save(photo(63), "JPEG"))
    with open(os.fsencode(dogs) + b"/latin1-\xe9.jpg", "wb") as f:
        f.write(save(photo(64), "JPEG"))
    bomb = Image.new("1", (12_000, 12_000))  # 144 M pixels: past Pillow's decompression-bomb limit
    bomb.save(dogs / "bomb.png", optimize=False)
    (dogs / "loop").symlink_to(root)
    os.mkfifo(dogs / "pipe.jpg")
    (dogs / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "empty class").mkdir()
    return root


EXPECTED_REJECTS = {
    "big dogs/truncated.jpg": "truncated",
    "big dogs/empty.jpg": "empty file",
    "big dogs/notes.jpg": "not an image",
    "big dogs/pipe.jpg": "not a regular file",
    "big dogs/bomb.png": "decompression bomb refused",
}


def test_what_the_scan_says_about_each_file(corpus):
    index = scan(corpus, progress=False, require_usable=False)
    assert index.class_names == ["big dogs", "empty class", "tabby cats"]
    rejects = dict(index.rejects)
    assert set(rejects) == set(EXPECTED_REJECTS)
    for path, reason in EXPECTED_REJECTS.items():
        assert rejects[path].startswith(reason), (path, rejects[path])
    used = {e.path: e for e in index.entries}
    for name in ("png-named.jpg", "anim.gif", "photo.webp", "photo.bmp", "photo.tiff", "deep.png", "cmyk.jpg",
                 "grey.jpg", "palette.png", "rgba.png", "one-pixel.png", "ünïcödé.jpg", "rotated.jpg",
                 "nested/deeper/inside.jpg"):
        assert f"big dogs/{name}" in used, name
    assert any(p.startswith("big dogs/latin1-") for p in used)
    assert (used["big dogs/rotated.jpg"].width, used["big dogs/rotated.jpg"].height) == (96, 96)
    warnings = dict(index.warnings)
    assert "the name says JPEG" in warnings["big dogs/png-named.jpg"]
    assert "first is used" in warnings["big dogs/anim.gif"]
    assert "linked folder" in warnings["big dogs/loop"]
    assert len(index.entries) == 12 + 15  # 16 awkward files, 3 of them broken, plus nested and Latin-1


def test_check_reports_the_problems_and_training_uses_the_good_files(corpus, tmp_path, capsys):
    assert cli.main(["data", "check", str(corpus), "--json", str(tmp_path / "check.json")]) == 0
    out = capsys.readouterr().out
    assert "empty class" in out and "1 images are smaller than 32 pixels" in out
    import json
    report = json.loads((tmp_path / "check.json").read_text())
    assert report["rejected_by_reason"] == {"empty file (0 bytes)": 1, "not a regular file (a pipe, socket or device)": 1,
                                            "decompression bomb refused": 1,
                                            "not an image (no decoder recognises the content)": 1, "truncated": 1}
    # training refuses the empty class with a clear message, and works once it is gone
    with pytest.raises(Exception, match="empty class: class folder has no usable images"):
        api.train(corpus, "scratch", out=tmp_path / "runs", epochs=1, image_size=80, progress=False, verbose=0)
    (corpus / "empty class").rmdir()
    run = api.train(corpus, "scratch", out=tmp_path / "runs", epochs=1, image_size=80, split="0.6,0.2,0.2",
                    progress=False, verbose=0)
    assert run.status.status == "finished"
    assert sum(sum(c) for c in run.config.counts.values()) == 27 and run.config.rejected == 5
    rejects = (tmp_path / "runs" / run.name / "rejects.csv").read_text()
    assert all(p in rejects for p in EXPECTED_REJECTS)


def test_a_single_class_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "only").mkdir()
    photo(1).save(tmp_path / "only" / "a.jpg")
    assert cli.main(["data", "check", str(tmp_path)]) == 2
    assert "only one class folder" in capsys.readouterr().err


def test_unreadable_file(corpus):
    if os.geteuid() == 0:
        pytest.skip("running as root: file permissions do not stop root from reading")
    victim = corpus / "tabby cats" / "good0.jpg"
    victim.chmod(0)
    try:
        assert dict(scan(corpus, progress=False, require_usable=False).rejects)["tabby cats/good0.jpg"] \
            .startswith("unreadable")
    finally:
        victim.chmod(0o644)


def test_predict_on_the_hostile_folder_finishes_and_names_every_bad_file(corpus, tmp_path):
    """The same files through predict (in a child process, with a timeout: a pipe once hung it):
    every good file classified, every bad one named with the scan's reason."""
    import csv
    import subprocess
    import sys

    from conftest import make_folder
    run = api.train(make_folder(tmp_path / "d", per_class=8), "scratch", out=tmp_path / "runs", epochs=1,
                    image_size=80, progress=False, verbose=0)
    out = tmp_path / "p.csv"
    proc = subprocess.run([sys.executable, "-m", "smallvision", "predict", run.path, str(corpus), "--output", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with open(out, encoding="utf-8", errors="surrogateescape", newline="") as f:
        rows = {os.path.relpath(r["path"], corpus).replace(os.sep, "/"): r for r in csv.DictReader(f)}
    bad = {p: r["error"] for p, r in rows.items() if r["error"]}
    assert set(bad) == set(EXPECTED_REJECTS), bad
    for path, reason in EXPECTED_REJECTS.items():
        assert bad[path].startswith(reason), (path, bad[path])
    good = {p for p, r in rows.items() if not r["error"]}
    scanned = {e.path for e in scan(corpus, progress=False, require_usable=False).entries}
    assert good == scanned and all(rows[p]["class"] in ("bars", "discs") for p in good)
    assert f"{len(bad)} of {len(rows)} files could not be classified" in proc.stderr
    assert "linked folder already scanned" in proc.stderr  # the loop: walked once, and said so


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "nothing-here.jpg", "no such file or folder"),
    (lambda d: str(d / "*.png"), "matches no image file"),
    (lambda d: d, "no image files in this folder"),
])
def test_predict_on_paths_that_name_no_image_is_a_one_line_error(tmp_path, capsys, make, message):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image name")
    model = tmp_path / "m.keras"  # never opened: the paths are checked before the model is loaded
    model.write_bytes(b"not opened")
    code = cli.main(["predict", str(model), str(make(folder))])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err and "Traceback" not in err


def test_predict_on_an_unreadable_folder_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    """Root reads every folder, so the refusal is simulated where the walk lists it."""
    import smallvision.data.imagefile as imagefile
    folder = tmp_path / "locked"
    folder.mkdir()
    real = os.scandir

    def scandir(p="."):
        if os.fspath(p) == str(folder):
            raise PermissionError(13, "Permission denied", str(folder))
        return real(p)

    monkeypatch.setattr(imagefile.os, "scandir", scandir)
    (tmp_path / "m.keras").write_bytes(b"not opened")
    assert cli.main(["predict", str(tmp_path / "m.keras"), str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"{folder}: cannot read the folder (Permission denied)" in err and err.count("\n") == 1


def test_read_file_refuses_what_must_not_be_read(tmp_path, monkeypatch):
    import smallvision.data.imagefile as imagefile
    from smallvision.data.decode import BadImage
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "big.jpg").write_bytes(b"\0" * 2000)
    checks = {tmp_path / "pipe.jpg": "not a regular file", tmp_path: "is a folder",
              tmp_path / "missing.jpg": "unreadable: No such file"}
    for path, reason in checks.items():
        with pytest.raises(BadImage, match=reason):
            imagefile.read_file(path)
    with pytest.raises(BadImage, match="too large for an image"):
        imagefile.read_file(tmp_path / "big.jpg", max_bytes=1000)
