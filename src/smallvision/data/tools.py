"""``data split`` and ``data check``: make a chapter-style split of a class-folder set, and
report what is wrong with a data folder before anyone trains on it."""
import os
import shutil

from .._io import write_json_atomic, write_text_atomic
from ..errors import SmallvisionError
from .scan import scan
from .split import find_duplicates, make_splits

TINY = 32  # pixels: a side shorter than this is suspicious for a photo
IMBALANCE = 3.0  # largest / smallest class in a split


def _place(src, dst):
    """Hard link where the file system allows it, copy otherwise. Returns how."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    try:
        os.link(src, dst)
        return "link"
    except OSError:
        shutil.copy2(src, dst)
        return "copy"


def split_folder(data, to, validation=0.15, test=0.15, seed=0, progress=True):
    """Write ``to/{train,validation,test}/<class>/...`` from a plain class-folder set.

    Only files that decode are placed (rejects are listed in the manifest's companion file);
    identical files stay in one split. Returns a summary dict.
    """
    fractions = (1 - validation - test, validation, test)  # checked before any work
    if min(fractions) < 0 or fractions[0] <= 0:
        raise SmallvisionError(f"--val and --test must be >= 0 and leave room for train. "
                               f"Received: val={validation}, test={test}")
    if os.path.exists(to) and os.listdir(to):
        raise SmallvisionError(f"{to}: already exists and is not empty; choose a new --to folder")
    index = scan(data, progress=progress)
    if index.has_splits:
        raise SmallvisionError(f"{data}: already has train/validation/test folders")
    splits = make_splits(index, fractions, seed)
    work = os.path.join(os.path.dirname(os.path.abspath(to)), f".tmp-{os.path.basename(os.path.abspath(to))}")
    shutil.rmtree(work, ignore_errors=True)
    rows, how = [], set()
    for split, positions in splits.items():
        for p in positions:
            e = index.entries[p]
            how.add(_place(os.path.join(data, *e.path.split("/")), os.path.join(work, split, *e.path.split("/"))))
            rows.append((split, index.class_names[e.label], e.path, e.sha256, e.bytes, e.width, e.height))
    write_text_atomic(os.path.join(work, "MANIFEST.tsv"), "split\tclass\tpath\tsha256\tbytes\twidth\theight\n"
                      + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    write_text_atomic(os.path.join(work, "REJECTED.tsv"), "path\treason\n"
                      + "".join(f"{p}\t{why}\n" for p, why in index.rejects))
    if os.path.exists(to):
        os.rmdir(to)
    os.replace(work, to)
    return dict(folder=to, counts={s: len(ps) for s, ps in splits.items()}, placed_by=sorted(how),
                rejected=len(index.rejects), duplicates=len(splits.duplicates), seed=seed)


def check_folder(data, progress=True):
    """Everything worth knowing before training on ``data``. Returns a JSON-ready report."""
    index = scan(data, progress=progress, require_usable=False)
    counts = index.counts()
    problems = []
    for split, per_class in counts.items():
        empty = [c for c, n in per_class.items() if n == 0]
        if empty:
            problems.append(f"{split}: no usable images for {', '.join(empty)}")
        nonzero = [n for n in per_class.values() if n]
        if len(nonzero) > 1 and max(nonzero) / min(nonzero) > IMBALANCE:
            problems.append(f"{split}: classes are imbalanced ({per_class}); consider --class-weight balanced")
    tiny = [(e.path, e.width, e.height) for e in index.entries if min(e.width, e.height) < TINY]
    if tiny:
        problems.append(f"{len(tiny)} images are smaller than {TINY} pixels on a side")
    duplicates = find_duplicates(index)
    for d in duplicates:
        if d["kind"] != "duplicate within a split":
            problems.append(f"{d['kind']}: {' = '.join(d['files'])}")
    reasons = {}
    for _, why in index.rejects:
        key = why.split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1
    return dict(folder=str(data), classes=index.class_names, usable=len(index.entries), counts=counts,
                rejected=[{"path": p, "reason": r} for p, r in index.rejects], rejected_by_reason=reasons,
                warnings=[{"path": p, "warning": w} for p, w in index.warnings],
                duplicates=duplicates, tiny=[{"path": p, "width": w, "height": h} for p, w, h in tiny],
                problems=problems, data_index_sha256=index.digest())


def format_check(report):
    lines = [f"{report['folder']}: {report['usable']} usable images, {len(report['rejected'])} rejected, "
             f"classes: {', '.join(report['classes'])}"]
    width = max(len(c) for c in report["classes"])
    for split, per_class in report["counts"].items():
        lines.append(f"  {split:<10} " + "  ".join(f"{c:>{width}}: {n:<6}" for c, n in per_class.items()))
    for reason, n in sorted(report["rejected_by_reason"].items()):
        lines.append(f"  rejected ({reason}): {n}")
    for r in report["rejected"][:20]:
        lines.append(f"    {r['path']}: {r['reason']}")
    for w in report["warnings"][:10]:
        lines.append(f"  warning {w['path']}: {w['warning']}")
    for d in report["duplicates"]:
        if d["kind"] == "duplicate within a split":
            lines.append(f"  note: identical files: {' = '.join(d['files'])}")
    lines += [f"  problem: {p}" for p in report["problems"]] or ["  no problems found"]
    return "\n".join(lines)


def write_check(report, path):
    write_json_atomic(path, report)


# -- the data verbs, as the API and the CLI call them ---------------------------------------------

DATASETS = ("cats-vs-dogs",)


def data_get(dataset="cats-vs-dogs", to="data", source=None, url=None, sha256=None, sizes=None, progress=True):
    """Download (or read from ``source``, a local archive or extracted folder) a data set and
    write it in the chapter's layout; ``sizes`` are photos per class for train, validation, test.

    Returns the summary of :func:`smallvision.data.fetch.get_cats_vs_dogs`.
    """
    from ..checks import check_choice, check_positive
    from . import fetch

    check_choice("dataset", dataset, DATASETS)
    if sizes is not None:
        if len(sizes) != 3:
            raise SmallvisionError(f"sizes must be three positive numbers train,validation,test. Received: sizes={sizes!r}")
        sizes = tuple(zip(("train", "validation", "test"), (check_positive("sizes", n, integer=True) for n in sizes)))
    return fetch.get_cats_vs_dogs(to, source=source, url=url or fetch.OFFICIAL_URL, sha256=sha256,
                                  sizes=sizes or fetch.CHAPTER_SIZES, progress=progress)


def data_split(data, to, validation=0.15, test=0.15, seed=0, progress=True):
    """Split a plain class-folder set into ``to/{train,validation,test}/`` (hard links where possible)."""
    from ..checks import check_seed
    return split_folder(data, to, validation, test, check_seed(seed), progress)


def data_check(data, json_path=None, progress=True):
    """Check a data folder; returns ``(report dict, text)`` and writes the report as JSON if asked."""
    report = check_folder(data, progress=progress)
    if json_path:
        write_check(report, json_path)
    return report, format_check(report)


def scan_and_split(data, image_size=None, crop_to_aspect=False, split=None, seed=0, progress=True, write=None):
    """``smallvision scan``: check a data folder and split it; with ``image_size``, also fill the
    decode cache; with ``write`` (a folder), write index.csv, rejects.csv, warnings.csv and
    duplicates.csv there, as a run folder holds them. Returns ``(index, splits)``."""
    from ..checks import DEFAULT_SPLIT, check_seed, image_size as parse_image_size, split_fractions
    from .decode import DecodeSpec

    spec = DecodeSpec(*parse_image_size(image_size), bool(crop_to_aspect)) if image_size else None
    fractions = split_fractions(DEFAULT_SPLIT if split is None else split)
    index = scan(data, spec, progress=progress)
    splits = make_splits(index, fractions, check_seed(seed))
    if write:
        from ..runs import Run
        os.makedirs(write, exist_ok=True)
        Run(write).write_data_files(index, splits)
    return index, splits
