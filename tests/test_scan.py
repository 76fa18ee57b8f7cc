"""The scan: layouts, every reject reason with real broken files, modes, warnings, the memo."""
import io
import os

import numpy as np
import pytest
from PIL import Image

from smallvision.data import scan as scan_mod
from smallvision.data.decode import DecodeSpec
from smallvision.errors import SmallvisionError
from conftest import make_folder, shape_image


def jpeg_bytes(size=64, seed=0):
    buf = io.BytesIO()
    Image.fromarray(shape_image(0, size, np.random.default_rng(seed))).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png_bytes(size=64, seed=0, mode="RGB"):
    buf = io.BytesIO()
    Image.fromarray(shape_image(1, size, np.random.default_rng(seed))).convert(mode).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def broken_folder(tmp_path):
    root = make_folder(tmp_path / "data", per_class=4, size=64)
    bad = root / "discs"
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "cut.jpg").write_bytes(jpeg_bytes(seed=3)[:700])
    (bad / "cut.png").write_bytes(png_bytes(seed=4)[:300])
    (bad / "notes.jpg").write_text("these are my notes, not a picture\n")
    (bad / "gone.jpg").symlink_to(tmp_path / "does-not-exist.jpg")
    (bad / "really-a-png.jpg").write_bytes(png_bytes(seed=5))
    (bad / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (bad / ".hidden.jpg").write_bytes(b"")
    (bad / "sub").mkdir()
    (bad / "sub" / "nested.jpg").write_bytes(jpeg_bytes(seed=6))
    return root


def test_every_reject_reason_is_named(broken_folder):
    index = scan_mod.scan(broken_folder, progress=False)
    reasons = dict(index.rejects)
    assert reasons["discs/empty.jpg"] == "empty file (0 bytes)"
    assert reasons["discs/cut.jpg"].startswith("truncated")
    assert reasons["discs/cut.png"].startswith(("truncated", "corrupt"))
    assert reasons["discs/notes.jpg"].startswith("not an image")
    assert reasons["discs/gone.jpg"].startswith("unreadable")
    assert len(index.rejects) == 5
    paths = {e.path for e in index.entries}
    assert "discs/really-a-png.jpg" in paths  # decodes: used, with a warning
    assert "discs/sub/nested.jpg" in paths  # nested folders belong to their class
    assert not any(".DS_Store" in p or ".hidden" in p for p in paths | set(reasons))
    warnings = dict(index.warnings)
    assert "content is PNG but the name says JPEG" in warnings["discs/really-a-png.jpg"]
    assert len(index.entries) == 4 + 4 + 2


def test_decompression_bomb_is_rejected(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "data", per_class=2, size=64)
    Image.new("RGB", (300, 300), "white").save(root / "bars" / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300 * 300 // 2 - 1)  # past 2x the limit: an error
    Image.new("RGB", (250, 250), "white").save(root / "bars" / "big.png")  # past 1x: a warning, refused too
    index = scan_mod.scan(root, progress=False)
    reasons = dict(index.rejects)
    assert reasons["bars/huge.png"].startswith("decompression bomb")
    assert reasons["bars/big.png"].startswith("decompression bomb")


def test_entries_carry_hash_size_and_format(tiny_data):
    index = scan_mod.scan(tiny_data, progress=False)
    assert index.class_names == ["bars", "discs"]
    e = index.entries[0]
    data = (tiny_data / e.path).read_bytes()
    import hashlib
    assert e.sha256 == hashlib.sha256(data).hexdigest()
    assert e.bytes == len(data) and e.format == "JPEG" and (e.width, e.height) == (96, 96)
    assert len(index.digest()) == 64


def test_split_layout_is_recognised(tmp_path):
    root = make_folder(tmp_path / "d", splits={"train": 3, "validation": 2, "test": 2})
    index = scan_mod.scan(root, progress=False)
    assert index.has_splits
    assert index.counts() == {"train": {"bars": 3, "discs": 3}, "validation": {"bars": 2, "discs": 2},
                              "test": {"bars": 2, "discs": 2}}


@pytest.mark.parametrize("make, message", [
    (lambda r: (r / "only").mkdir(parents=True), "only one class folder"),
    (lambda r: r.mkdir(), "no class folders"),
    (lambda r: ((r / "a").mkdir(parents=True), (r / "b").mkdir(), (r / "a" / "x.jpg").write_bytes(jpeg_bytes())),
     "b: class folder has no usable images"),
    (lambda r: ((r / "a").mkdir(parents=True), (r / "b").mkdir(), (r / "a" / "x.jpg").write_bytes(jpeg_bytes()),
                (r / "b" / "y.jpg").write_bytes(b"")), "b: class folder has no usable images"),
])
def test_folder_mistakes_are_one_line_errors(tmp_path, make, message):
    root = tmp_path / "d"
    make(root)
    with pytest.raises(SmallvisionError, match=message) as e:
        scan_mod.scan(root, progress=False)
    assert "\n" not in str(e.value)


def test_missing_folder(tmp_path):
    with pytest.raises(SmallvisionError, match="no such folder"):
        scan_mod.scan(tmp_path / "nope", progress=False)


def test_second_scan_reads_no_image(tiny_data, monkeypatch):
    spec = DecodeSpec(80, 80)
    scan_mod.scan(tiny_data, spec, progress=False)
    calls = []
    monkeypatch.setattr(scan_mod, "_check", lambda *a: calls.append(a))
    again = scan_mod.scan(tiny_data, spec, progress=False)
    assert calls == [] and len(again.entries) == 32


def test_changed_file_is_checked_again(tiny_data):
    spec = DecodeSpec(80, 80)
    scan_mod.scan(tiny_data, spec, progress=False)
    victim = sorted((tiny_data / "bars").iterdir())[0]
    victim.write_bytes(b"")
    index = scan_mod.scan(tiny_data, spec, progress=False)
    assert dict(index.rejects) == {f"bars/{victim.name}": "empty file (0 bytes)"}


def test_symlink_loops_are_walked_once(tmp_path):
    root = make_folder(tmp_path / "data", per_class=3, size=64)
    (root / "bars" / "up").symlink_to(root)  # points back at the data folder
    (root / "discs" / "self").symlink_to(root / "discs")
    index = scan_mod.scan(root, progress=False)
    assert len(index.entries) == 6
    assert {p for p, _ in index.warnings} == {"bars/up", "discs/self"}


def test_file_names_that_are_not_utf8_survive_the_run_files(tmp_path):
    from smallvision.data.split import make_splits
    from smallvision.runs import Run
    root = make_folder(tmp_path / "data", per_class=3, size=64)
    odd = os.fsencode(root / "bars") + b"/caf\xe9 \xff.jpg"  # Latin-1 bytes, as old cameras wrote them
    with open(odd, "wb") as f:
        f.write(jpeg_bytes(seed=9))
    (root / "discs" / "ünïcode name.jpg").write_bytes(jpeg_bytes(seed=10))
    index = scan_mod.scan(root, progress=False)
    assert len(index.entries) == 8
    run = Run(tmp_path / "report")
    run.write_data_files(index, make_splits(index, (0.5, 0.25, 0.25)))
    raw = (tmp_path / "report" / "index.csv").read_bytes()
    assert b"caf\xe9 \xff.jpg" in raw and "ünïcode name.jpg".encode() in raw
