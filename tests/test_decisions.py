"""smallvision data apply: decisions relabel and quarantine, a bad line is refused and touches
nothing, and --undo leaves the tree byte-identical."""
import csv
import hashlib
import os

import pytest

from conftest import make_folder
from smallvision import api, cli
from smallvision.data import decisions as dec
from smallvision.data.scan import scan


def tree(root):
    """{relative path: sha256} of every file under root, hidden ones included, and every folder."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        out[rel + "/"] = "folder"
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not os.path.isfile(path):
                out[os.path.join(rel, name)] = "link" if os.path.islink(path) else "special"
                continue
            with open(path, "rb") as f:
                out[os.path.join(rel, name)] = hashlib.sha256(f.read()).hexdigest()
    return out


def sha(path):
    return dec.sha256_of(path)


def write(path, rows, header=("path", "action", "to", "sha256")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def data(tmp_path):
    return make_folder(tmp_path / "data", size=32, splits={"train": 4, "validation": 2, "test": 2})


def files(data, split, c):
    return sorted(f"{split}/{c}/{n}" for n in os.listdir(data / split / c))


def test_apply_then_undo_is_byte_identical(data, tmp_path):
    before = tree(data)
    bar, disc = files(data, "train", "bars")[0], files(data, "validation", "discs")[0]
    decisions = write(tmp_path / "d.csv", [(bar, "relabel", "discs", sha(data / bar)),
                                           (disc, "remove", "", sha(data / disc)),
                                           (files(data, "test", "bars")[0], "keep", "", "")])
    result = api.data_apply(data, decisions)
    assert not result.refused and len(result.moves) == 2
    moved = "train/discs/" + bar.split("/")[-1]
    assert (data / moved).is_file() and not (data / bar).exists() and not (data / disc).exists()
    quarantined = [m.target for m in result.moves if m.action == "remove"][0]
    assert quarantined.startswith(".smallvision/quarantine/") and (data / quarantined).is_file()
    assert sha(data / quarantined) == dict(before)[disc]  # moved, never rewritten
    index = scan(data, progress=False)  # the scan sees the new labels and skips the quarantine
    paths = {e.path: index.class_names[e.label] for e in index.entries}
    assert paths[moved] == "discs" and disc not in paths and len(paths) == 15
    assert not any(p.startswith(".") for p in paths)
    assert api.data_undo(data).refused == ()
    assert tree(data) == before
    with pytest.raises(api.SmallvisionError, match="nothing to undo"):
        api.data_undo(data)


def test_two_applies_undo_in_turn(data, tmp_path):
    before = tree(data)
    a, b = files(data, "train", "bars")[:2]
    api.data_apply(data, write(tmp_path / "1.csv", [(a, "remove", "", sha(data / a))]))
    middle = tree(data)
    api.data_apply(data, write(tmp_path / "2.csv", [(b, "relabel", "discs", sha(data / b))]))
    api.data_undo(data)
    assert tree(data) == middle
    api.data_undo(data)
    assert tree(data) == before


def test_every_bad_line_is_refused_and_touches_nothing(data, tmp_path):
    bars = files(data, "train", "bars")
    (data / bars[1]).write_bytes((data / bars[1]).read_bytes() + b"edited")  # changed after the audit
    outside = tmp_path / "outside.jpg"
    outside.write_bytes((data / bars[2]).read_bytes())
    os.symlink(outside, data / "train" / "bars" / "link.jpg")
    os.mkfifo(data / "train" / "bars" / "pipe.jpg")
    good = files(data, "test", "discs")[0]
    rows = [
        (bars[0], "relabel", "cats", sha(data / bars[0])),  # unknown class
        (bars[1], "remove", "", "0" * 64),  # changed since
        ("train/bars/gone.jpg", "remove", "", "0" * 64),  # gone
        ("../outside.jpg", "remove", "", sha(outside)),  # outside, by ..
        (str(outside), "remove", "", sha(outside)),  # outside, absolute
        ("train/bars/link.jpg", "remove", "", sha(outside)),  # outside, by a link
        ("train/bars/pipe.jpg", "remove", "", ""),  # not a regular file
        (".smallvision/x.jpg", "remove", "", "0" * 64),  # hidden
        (bars[2], "remove", "", ""),  # no sha256
        (bars[3], "burn", "", sha(data / bars[3])),  # unknown action
        (bars[3], "relabel", "bars", sha(data / bars[3])),  # already there
        ("train/x.jpg", "remove", "", "0" * 64),  # not inside a class folder
        (good, "remove", "", sha(data / good)),  # the one good line
        (good, "relabel", "bars", sha(data / good)),  # named twice
    ]
    before = tree(data)
    result = api.data_apply(data, write(tmp_path / "d.csv", rows))
    whys = [why for _, _, why in result.refused]
    assert len(result.refused) == len(rows) - 1 and [m.source for m in result.moves] == [good]
    for needle in ("unknown class 'cats'", "changed since the audit", "gone since the audit", "'..' parts",
                   "an absolute path", "outside the data folder (through a link)", "not a regular file",
                   "hidden", "no sha256", "unknown action 'burn'", "already in class bars",
                   "not inside a class folder", "named twice"):
        assert any(needle in w for w in whys), needle
    assert [n for n, _, _ in result.refused] == [r for r in range(2, len(rows) + 2) if r != len(rows)]
    after = tree(data)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed and all(k.startswith(("test/discs/" + good.split("/")[-1], "./.smallvision", ".smallvision"))
                           for k in changed), changed
    assert outside.read_bytes() == (data / bars[2]).read_bytes()


def test_an_apply_killed_half_way_undoes(data, tmp_path, monkeypatch):
    before = tree(data)
    picks = files(data, "train", "discs")[:3]
    real, calls = dec._move, []

    def dying(*a):
        calls.append(a)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed after the first move
        real(*a)
    monkeypatch.setattr(dec, "_move", dying)
    with pytest.raises(KeyboardInterrupt):
        api.data_apply(data, write(tmp_path / "d.csv", [(p, "remove", "", sha(data / p)) for p in picks]))
    monkeypatch.setattr(dec, "_move", real)
    assert not (data / picks[0]).exists() and (data / picks[1]).exists()
    assert len(api.data_undo(data).moves) == 1
    assert tree(data) == before


def test_undo_refuses_a_file_changed_in_quarantine(data, tmp_path):
    pick = files(data, "train", "discs")[0]
    moved = api.data_apply(data, write(tmp_path / "d.csv", [(pick, "remove", "", sha(data / pick))])).moves[0]
    (data / moved.target).write_bytes(b"not the same")
    result = api.data_undo(data)
    assert result.refused and "changed since it was moved" in result.refused[0][2]
    assert (data / moved.target).exists() and dec._logs(data)  # the log is kept for another try


def test_the_command_line_and_unreadable_decisions(data, tmp_path, capsys):
    pick = files(data, "train", "bars")[0]
    good = write(tmp_path / "d.csv", [(pick, "relabel", "discs", sha(data / pick))])
    assert cli.main(["data", "apply", str(data), str(good), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would move 1 file (1 relabelled); 0 refused" in out and (data / pick).exists()
    assert cli.main(["data", "apply", str(data), str(good)]) == 0
    assert "undo log" in capsys.readouterr().out and not (data / pick).exists()
    assert cli.main(["data", "apply", str(data), "--undo"]) == 0 and (data / pick).exists()
    capsys.readouterr()
    binary = tmp_path / "b.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    nul = tmp_path / "nul.csv"
    nul.write_bytes(b"path,action\n\x00\x00")
    cases = [str(tmp_path / "missing.csv"), str(binary), str(nul), str(tmp_path),
             str(write(tmp_path / "h.csv", [("a", "b")], header=("file", "label")))]
    for bad in cases:
        assert cli.main(["data", "apply", str(data), bad]) == 2, bad
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("smallvision: error: ") and "Traceback" not in err, err
    assert cli.main(["data", "apply", str(data)]) == 2  # neither a file nor --undo
    assert cli.main(["data", "apply", str(data), "--undo"]) == 2  # nothing to undo
    assert "nothing to undo" in capsys.readouterr().err
    refused = write(tmp_path / "r.csv", [(pick, "remove", "", "0" * 64)])
    assert cli.main(["data", "apply", str(data), str(refused)]) == 1
    assert f"line 2: {pick}: changed since the audit" in capsys.readouterr().out
