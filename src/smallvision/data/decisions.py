"""``smallvision data apply DATA decisions.csv``: act on an audit's findings, safely.

A decisions file (``audit.html`` writes one; any CSV with these columns will do)::

    path,action,to,sha256
    train/dogs/dog.1308.jpg,remove,,3f1c…
    validation/dogs/dog.1094.jpg,relabel,cats,a9e0…

* ``relabel`` moves the file into the class folder ``to`` of the same split;
* ``remove`` moves it into the hidden quarantine folder ``DATA/.smallvision/quarantine/<stamp>/``
  (the scan skips hidden folders); nothing is ever deleted;
* ``keep`` (or an empty action) does nothing.

Every line is checked before anything moves; a line that fails a check — a path outside ``DATA``
or inside its hidden folders, a file gone or changed since the audit (its ``sha256``), an
unknown class, a file already there — is refused with one line naming it and what is wrong, and
touches nothing; the other lines go ahead. Each apply first writes its undo log
(``DATA/.smallvision/applied/<stamp>.json``, every move planned), then moves; ``--undo`` moves
the files of the latest log back (those that moved: an apply killed half-way undoes too) and,
when all are back, deletes the log and the folders the apply made, so that the tree is exactly as
it was, byte for byte.
"""
import csv
import dataclasses
import hashlib
import json
import os
import time

from .._io import write_json_atomic
from ..errors import SmallvisionError
from .imagefile import visible
from .scan import find_files

HIDDEN = ".smallvision"  # inside DATA: the undo logs and the quarantine (the scan skips it)
ACTIONS = ("relabel", "remove", "keep")
COLUMNS = ("path", "action", "to", "sha256")


@dataclasses.dataclass(frozen=True)
class Move:
    """One planned move, relative to DATA."""

    source: str
    target: str
    sha256: str
    action: str


@dataclasses.dataclass(frozen=True)
class Applied:
    """What :func:`apply_decisions` (or :func:`undo`) did."""

    data: str
    moves: tuple  # of Move
    refused: tuple  # of (line number, path, why)
    log: str | None  # the undo log written (apply) or removed/kept (undo)
    dry_run: bool = False

    def summary(self):
        verb = "would move" if self.dry_run else "moved"
        lines = [f"line {n}: {path or '(no path)'}: {why}" for n, path, why in self.refused]
        words = {"relabel": "relabelled", "remove": "quarantined", "restore": "restored"}
        done = ", ".join(f"{n} {w}" for a, w in words.items() if (n := sum(m.action == a for m in self.moves)))
        n = len(self.moves)
        lines.append(f"{self.data}: {verb} {n} file{'' if n == 1 else 's'} ({done or 'nothing'}); "
                     f"{len(self.refused)} refused"
                     + (f"; undo log {self.log}" if self.log and not self.dry_run else ""))
        return "\n".join(lines)


def sha256_of(path, block=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            h.update(chunk)
    return h.hexdigest()


def read_decisions(path):
    """The decision rows of a CSV file, as ``[(line number, {column: value})]``; a file that cannot
    be read as such is a one-line error naming it."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            text = f.read(64 << 20)
    except FileNotFoundError:
        raise SmallvisionError(f"{path}: no such decisions file") from None
    except UnicodeDecodeError:
        raise SmallvisionError(f"{path}: not a text (UTF-8) CSV file") from None
    except OSError as e:
        raise SmallvisionError(f"{path}: cannot read the decisions file ({e.strerror or e})") from None
    if "\0" in text:
        raise SmallvisionError(f"{path}: not a text CSV file (it holds NUL bytes)")
    try:
        reader = csv.DictReader(text.splitlines())
        header = [h.strip().lower() for h in reader.fieldnames or []]
        missing = [c for c in ("path", "action") if c not in header]
        if missing:
            raise SmallvisionError(f"{path}: not a decisions file: no {' or '.join(missing)} column "
                                   f"(expected {','.join(COLUMNS)})")
        rows = []
        for row in reader:
            clean = {(k or "").strip().lower(): (v or "").strip() if isinstance(v, str) else "" for k, v in row.items()}
            rows.append((reader.line_num, clean))
    except csv.Error as e:
        raise SmallvisionError(f"{path}: not a readable CSV file ({e})") from None
    return rows


def _layout(data):
    class_names, has_splits, _, _ = find_files(data)
    return class_names, (1 if has_splits else 0)


def _inside(data, rel):
    """``rel`` as a path inside ``data`` (checked: relative, no way out, not hidden), or a reason."""
    if not rel:
        return None, "no path"
    if os.path.isabs(rel) or rel.startswith(("/", "\\")) or (len(rel) > 1 and rel[1] == ":"):
        return None, "an absolute path; decisions name files relative to the data folder"
    parts = rel.replace("\\", "/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None, "not a plain path inside the data folder (empty, '.' or '..' parts)"
    if not all(visible(p) for p in parts):
        return None, "a hidden file or folder (the scan does not read it)"
    full = os.path.join(data, *parts)
    root = os.path.realpath(data)
    if not os.path.realpath(full).startswith(root + os.sep):
        return None, "outside the data folder (through a link)"
    return parts, None


def plan(data, rows):
    """``(moves, refused)`` for the decision ``rows`` (see :func:`read_decisions`); touches nothing."""
    class_names, depth = _layout(data)
    moves, refused, seen, targets = [], [], set(), set()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n, row in rows:
        rel = row.get("path", "")
        action = (row.get("action") or "keep").lower()
        if action not in ACTIONS:
            refused.append((n, rel, f"unknown action {action!r} (one of {', '.join(ACTIONS)})"))
            continue
        if action == "keep":
            continue
        parts, why = _inside(data, rel)
        if why is None and len(parts) < depth + 2:
            why = "not inside a class folder"
        if why is None and parts[depth] not in class_names:
            why = f"not inside a class folder ({parts[depth]!r} is not one of {', '.join(class_names)})"
        rel = "/".join(parts) if parts else rel
        if why is None and rel in seen:
            why = "named twice in the decisions file (the first line counts)"
        full = os.path.join(data, *parts) if parts else ""
        if why is None:
            if not os.path.lexists(full):
                why = "gone since the audit (no such file)"
            elif os.path.islink(full) or not os.path.isfile(full):
                why = "not a regular file"
        expected = row.get("sha256", "").lower()
        if why is None and not expected:
            why = "no sha256: cannot tell whether it changed since the audit"
        if why is None:
            try:
                if sha256_of(full) != expected:
                    why = "changed since the audit (its sha256 differs)"
            except OSError as e:
                why = f"cannot be read ({e.strerror or e})"
        if why is None and action == "relabel":
            to = row.get("to", "")
            if to not in class_names:
                why = f"unknown class {to!r} (one of {', '.join(class_names)})"
            elif to == parts[depth]:
                why = f"already in class {to}"
            else:
                target = "/".join(parts[:depth] + [to] + parts[depth + 1:])
        elif why is None:
            target = "/".join([HIDDEN, "quarantine", stamp] + parts)
        if why is None and (target in targets or os.path.lexists(os.path.join(data, *target.split("/")))):
            why = f"{target} already exists"
        if why is not None:
            refused.append((n, rel, why))
            continue
        seen.add(rel)
        targets.add(target)
        moves.append(Move(rel, target, expected, action))
    return moves, refused


def _logs(data):
    folder = os.path.join(data, HIDDEN, "applied")
    names = sorted(n for n in os.listdir(folder) if n.endswith(".json")) if os.path.isdir(folder) else []
    return [os.path.join(folder, n) for n in names]


def _makedirs(data, folder, made):
    """Make ``folder`` (absolute, inside ``data``) and its missing parents; note each one made in
    ``made`` (relative to ``data``), so that an undo removes exactly those."""
    missing = []
    while not os.path.isdir(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    for f in reversed(missing):
        os.mkdir(f)
        made.append(os.path.relpath(f, data).replace(os.sep, "/"))


def _move(data, source, target, made):
    src, dst = (os.path.join(data, *p.split("/")) for p in (source, target))
    _makedirs(data, os.path.dirname(dst), made)
    os.rename(src, dst)  # same file system: the bytes and the modification time stay


def apply_decisions(data, decisions, dry_run=False):
    """Relabel and quarantine as ``decisions`` (a CSV file) says; returns :class:`Applied`."""
    data = os.fspath(data)
    if not os.path.isdir(data):
        raise SmallvisionError(f"{data}: no such data folder")
    moves, refused = plan(data, read_decisions(decisions))
    if dry_run or not moves:
        return Applied(data, tuple(moves), tuple(refused), None, dry_run=dry_run)
    made = []
    _makedirs(data, os.path.join(data, HIDDEN, "applied"), made)
    log = os.path.join(data, HIDDEN, "applied", f"{time.strftime('%Y%m%d-%H%M%S')}-{len(_logs(data)):04d}.json")
    record = {"decisions": os.path.abspath(decisions), "made": made,
              "moves": [dataclasses.asdict(m) for m in moves]}
    write_json_atomic(log, record)  # before anything moves: a kill half-way can still be undone
    for m in moves:
        _move(data, m.source, m.target, record["made"])
    write_json_atomic(log, record)  # with the folders the moves made
    return Applied(data, tuple(moves), tuple(refused), log)


def undo(data):
    """Move back the files of the latest apply of ``data``; returns :class:`Applied` (its moves:
    the files restored; refused: those that could not be, and the log is then kept)."""
    data = os.fspath(data)
    if not os.path.isdir(data):
        raise SmallvisionError(f"{data}: no such data folder")
    logs = _logs(data)
    if not logs:
        raise SmallvisionError(f"{data}: nothing to undo (no apply log in {HIDDEN}/applied)")
    log = logs[-1]
    try:
        with open(log, encoding="utf-8") as f:
            record = json.load(f)
        moves = [Move(**m) for m in record["moves"]]
        made = list(record.get("made", []))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SmallvisionError(f"{log}: not a readable undo log ({e})") from None
    restored, refused = [], []
    for n, m in enumerate(reversed(moves), 1):
        src, dst = (os.path.join(data, *p.split("/")) for p in (m.source, m.target))
        if os.path.lexists(src) and not os.path.lexists(dst):
            continue  # never moved (an apply killed half-way)
        why = None
        if not os.path.isfile(dst):
            why = f"{m.target} is gone; cannot restore it"
        elif os.path.lexists(src):
            why = "a file is in its old place again"
        elif sha256_of(dst) != m.sha256:
            why = f"{m.target} changed since it was moved (its sha256 differs)"
        if why:
            refused.append((n, m.source, why))
            continue
        os.rename(dst, src)
        restored.append(Move(m.target, m.source, m.sha256, "restore"))
    if refused:
        return Applied(data, tuple(restored), tuple(refused), log)
    os.remove(log)
    for folder in sorted(made, key=lambda p: -p.count("/")):
        path = os.path.join(data, *folder.split("/"))
        for dirpath, dirnames, filenames in os.walk(path, topdown=False):  # empty folders only
            if not os.listdir(dirpath):
                os.rmdir(dirpath)
    return Applied(data, tuple(restored), (), log)
