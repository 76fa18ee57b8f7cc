"""Scan an image folder: find classes and files, check every file by decoding it, index it.

Two layouts are recognised (class names are sorted, as Keras does):

* ``DATA/<class>/...`` — one sub-folder per class; splits are made later with a seed.
* ``DATA/train/<class>/...``, ``DATA/validation/<class>/...``, ``DATA/test/<class>/...`` —
  the chapter's layout; the folders give the splits (``val``/``valid`` also name validation).

Every file is decoded in full (see :mod:`.decode`) and is either indexed (path, class,
sha256, size) or rejected with a reason. When a :class:`DecodeSpec` and cache are given,
that one decode also fills the decode cache, so a cold start decodes each image once.
What was learnt about a file is memoised under the cache root, keyed by path, size and
modification time, so a second scan of an unchanged folder reads no image data at all.
"""
import dataclasses
import hashlib
import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor

from .._io import write_json_atomic
from ..errors import SmallvisionError
from ..progress import Progress
from .cache import DecodeCache, default_cache_root
from .decode import DECODER_VERSION, BadImage, DecodeSpec, decode_bytes, opencv_threads
from .imagefile import NOT_REGULAR, read_file, visible, walk

SPLIT_NAMES = {"train": "train", "validation": "validation", "val": "validation", "valid": "validation",
               "test": "test"}
VERIFY_SPEC = DecodeSpec(8, 8)  # smallest decode that still reads every byte of the file
_EXT_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".png": "PNG", ".gif": "GIF",
                ".bmp": "BMP", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}


@dataclasses.dataclass
class Entry:
    path: str  # relative to the scanned root, with "/" separators
    label: int
    split: str | None  # given by the folder layout, or None
    sha256: str
    bytes: int
    width: int
    height: int
    format: str


@dataclasses.dataclass
class Index:
    """What the scan found: accepted files, rejected files with reasons, and warnings."""

    root: str
    class_names: list
    entries: list
    rejects: list  # (path, reason)
    warnings: list  # (path, message)
    has_splits: bool

    def digest(self):
        """sha256 over (path, class, split, content hash) of every accepted file."""
        h = hashlib.sha256()
        for e in sorted(self.entries, key=lambda e: e.path):
            h.update(f"{e.path}\t{self.class_names[e.label]}\t{e.split}\t{e.sha256}\n".encode("utf-8", "surrogateescape"))
        return h.hexdigest()

    def counts(self):
        """{split or 'all': {class: count}}."""
        out = {}
        for e in self.entries:
            d = out.setdefault(e.split or "all", {c: 0 for c in self.class_names})
            d[self.class_names[e.label]] += 1
        return out

    def summary(self):
        lines = [f"{self.root}: {len(self.entries)} images in {len(self.class_names)} classes "
                 f"({', '.join(self.class_names)}), {len(self.rejects)} rejected"]
        for split, d in self.counts().items():
            lines.append(f"  {split:<10} " + "  ".join(f"{c}: {n}" for c, n in d.items()))
        for path, why in self.rejects[:10]:
            lines.append(f"  rejected {path}: {why}")
        if len(self.rejects) > 10:
            lines.append(f"  ... and {len(self.rejects) - 10} more rejected (see rejects.csv)")
        for path, why in self.warnings[:10]:
            lines.append(f"  warning {path}: {why}")
        if len(self.warnings) > 10:
            lines.append(f"  ... and {len(self.warnings) - 10} more warnings")
        return "\n".join(lines)


def _subdirs(folder):
    return sorted(n for n in os.listdir(folder) if visible(n) and os.path.isdir(os.path.join(folder, n)))


def _files_under(folder, rel_prefix, warnings):
    """Every visible file under ``folder`` (see :func:`.imagefile.walk`), as root-relative paths."""
    found, notes = walk(folder)
    warnings += [("/".join([rel_prefix, rel]) if rel else rel_prefix, msg) for rel, msg in notes]
    return ["/".join([rel_prefix, rel]) for rel in found]


def find_files(root):
    """Layout of ``root``: (class_names, has_splits, [(relpath, class_name, split)], warnings)."""
    if not os.path.isdir(root):
        what = "is a file, not a folder" if os.path.exists(root) else "no such folder"
        raise SmallvisionError(f"{root}: {what} (expected a folder with one sub-folder per class)")
    top = _subdirs(root)
    warnings = [(n, "file directly in the data folder, not in a class folder: ignored")
                for n in sorted(os.listdir(root)) if visible(n) and os.path.isfile(os.path.join(root, n))]
    split_dirs = [d for d in top if d.lower() in SPLIT_NAMES]
    has_splits = bool(split_dirs) and any(SPLIT_NAMES[d.lower()] == "train" for d in split_dirs)
    files = []
    if has_splits:
        others = [d for d in top if d not in split_dirs]
        if others:
            raise SmallvisionError(f"{root}: has split folders ({', '.join(split_dirs)}) and other folders "
                                   f"({', '.join(others)}); expected only train/, validation/, test/")
        per_split = {}
        for d in split_dirs:
            split = SPLIT_NAMES[d.lower()]
            if split in per_split:
                raise SmallvisionError(f"{root}: two folders name the {split} split ({d} and another)")
            per_split[split] = _subdirs(os.path.join(root, d))
            for c in per_split[split]:
                files += [(p, c, split) for p in _files_under(os.path.join(root, d, c), f"{d}/{c}", warnings)]
        class_names = per_split.get("train", [])
        for split, classes in per_split.items():
            extra = sorted(set(classes) - set(class_names))
            if extra:
                raise SmallvisionError(f"{os.path.join(root, split)}: classes {extra} are not in train/ "
                                       f"(train has {class_names})")
    else:
        class_names = top
        for c in class_names:
            files += [(p, c, None) for p in _files_under(os.path.join(root, c), c, warnings)]
    if not class_names:
        raise SmallvisionError(f"{root}: no class folders found (expected one sub-folder per class, "
                               "or train/ validation/ test/ each holding one per class)")
    if len(class_names) < 2:
        raise SmallvisionError(f"{root}: only one class folder ({class_names[0]}); a classifier needs at least two")
    return class_names, has_splits, files, warnings


class _Memo:
    """path -> (size, mtime_ns, sha256, verdict), stored per scanned root under the cache root."""

    def __init__(self, cache_root, root):
        key = hashlib.sha1(os.fsencode(os.path.realpath(root))).hexdigest()[:16]
        self.path = os.path.join(cache_root, "scan", f"{key}-v{DECODER_VERSION}.json")
        try:
            with open(self.path, encoding="utf-8") as f:
                self.data = json.load(f)
        except (OSError, ValueError):
            self.data = {}
        self.changed = False

    def get(self, rel, st):
        rec = self.data.get(rel)
        if rec and rec[0] == st.st_size and rec[1] == st.st_mtime_ns:
            return rec[2], rec[3]
        return None

    def put(self, rel, st, sha, verdict):
        self.data[rel] = [st.st_size, st.st_mtime_ns, sha, verdict]
        self.changed = True

    def save(self, keep):
        self.data = {k: v for k, v in self.data.items() if k in keep}
        if self.changed:
            write_json_atomic(self.path, self.data, compact=True)


def _check(abspath, spec, writer):
    """Read, hash and decode one file; store the pixels if a writer is given. -> (sha, verdict)"""
    try:
        data = read_file(abspath)
    except BadImage as e:
        return None, {"reject": str(e)}
    sha = hashlib.sha256(data).hexdigest()
    try:
        array, info = decode_bytes(data, spec)
    except BadImage as e:
        return sha, {"reject": str(e)}
    if writer is not None:
        writer.put(sha, array)
    return sha, {"format": info.format, "width": info.width, "height": info.height, "notes": info.notes}


def scan(root, spec=None, cache_root=None, workers=None, progress=True, require_usable=True, cache=None):
    """Scan ``root`` and return an :class:`Index`.

    Args:
        root: the data folder.
        spec: if given, the verifying decode is done at this spec and stored in the decode
            cache, so that the images are decoded only once.
        cache_root: where the memo and decode cache live (default: :func:`default_cache_root`).
        workers: decoding threads (default: the number of cores).
        progress: print progress and a summary to stderr.
        require_usable: raise when a class has no usable image (``data check`` reports it instead).
        cache: an open :class:`DecodeCache` for ``spec`` to fill (default: opened here).

    Raises:
        SmallvisionError: for a missing folder, no or one class, or a class with no usable image.
    """
    root = os.fspath(root)
    cache_root = cache_root or default_cache_root()
    class_names, has_splits, files, warnings = find_files(root)
    memo = _Memo(cache_root, root)
    if cache is None and spec is not None:
        cache = DecodeCache(spec, cache_root)
    known, sizes, todo = {}, {}, []
    for rel, _, _ in files:
        abspath = os.path.join(root, *rel.split("/"))
        try:
            st = os.stat(abspath)
        except OSError as e:
            known[rel] = (None, {"reject": f"unreadable: {e.strerror or e}"})
            continue
        sizes[rel] = st.st_size
        if not stat.S_ISREG(st.st_mode):  # reading a pipe would block forever
            known[rel] = (None, {"reject": NOT_REGULAR})
            continue
        hit = memo.get(rel, st)
        if hit and ("reject" in hit[1] or cache is None or hit[0] in cache):
            known[rel] = hit
        else:
            todo.append((rel, abspath, st))

    if todo:
        bar = Progress(f"decoding {root}" if cache is not None else f"checking {root}", len(todo), enabled=progress)
        writer = cache.writer() if cache is not None else None
        try:
            with opencv_threads(1), ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
                jobs = [(rel, st, pool.submit(_check, abspath, spec or VERIFY_SPEC, writer))
                        for rel, abspath, st in todo]
                for rel, st, job in jobs:
                    try:
                        sha, verdict = job.result()
                    except OSError as e:  # the cache, not the image: disk full, read-only, ...
                        raise SmallvisionError(f"{cache.dir if cache is not None else root}: cannot write the "
                                               f"decode cache ({e.strerror or e})") from None
                    known[rel] = (sha, verdict)
                    if sha is not None:
                        memo.put(rel, st, sha, verdict)
                    bar.update()
        finally:
            if writer is not None:
                writer.close()
            try:
                memo.save({rel for rel, _, _ in files})
            except OSError:  # the memo only saves time; a full disk must not hide the real error
                pass
        bar.close()

    label_of = {c: i for i, c in enumerate(class_names)}
    entries, rejects = [], []
    for rel, cls, split in files:
        sha, verdict = known[rel]
        if "reject" in verdict:
            rejects.append((rel, verdict["reject"]))
            continue
        ext_format = _EXT_FORMATS.get(os.path.splitext(rel)[1].lower())
        if ext_format and ext_format != verdict["format"]:
            warnings.append((rel, f"content is {verdict['format']} but the name says {ext_format}; used as {verdict['format']}"))
        for note in verdict.get("notes", []):
            warnings.append((rel, note))
        entries.append(Entry(rel, label_of[cls], split, sha, sizes[rel], verdict["width"], verdict["height"],
                             verdict["format"]))
    index = Index(root, class_names, entries, rejects, warnings, has_splits)
    if require_usable:
        _check_classes(index)
    if progress:
        import sys
        print(index.summary(), file=sys.stderr)
    return index


def _check_classes(index):
    counts = {}
    for e in index.entries:
        if e.split in (None, "train"):
            counts[e.label] = counts.get(e.label, 0) + 1
    where = os.path.join(index.root, "train") if index.has_splits else index.root
    for i, c in enumerate(index.class_names):
        if not counts.get(i):
            raise SmallvisionError(f"{os.path.join(where, c)}: class folder has no usable images")
