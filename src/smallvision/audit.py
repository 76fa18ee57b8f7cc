"""``smallvision audit DATA``: what a pretrained network's features say about the data itself —
wrong labels, near-copies within a split and leaks across splits, photos of something else,
and images of poor quality — before anything is trained on it.

Everything stands on the cached frozen features of the ``features`` strategy (the same cache:
a later ``features`` run, or a second audit, starts warm):

* **label** — out-of-fold class probabilities (K folds of a logistic regression on the
  L2-normalised features: every image is judged by a model that never saw it), then confident
  learning (cleanlab's ``find_label_issues``); the score is 1 - p(given class), the suggestion
  the class the out-of-fold model prefers;
* **near_duplicate / leak** — pairs of different files that are the same photo (resized,
  re-encoded, cropped or slightly edited): nearest neighbours by the features whose small grey
  thumbnails also correlate (:data:`COPY_SCORE`), within one split or across splits (a
  validation or test photo that training also saw). Files with the same bytes are the scan's
  (``duplicates.csv``), not repeated here;
* **outlier** — the mean cosine distance to the :data:`NEIGHBOURS` nearest training images
  (itself left out); flagged beyond a robust threshold of the data's own distances;
* **quality** — very dark or bright, blurry, nearly blank, tiny, or oddly shaped images, from
  the decoded cache and the scan's sizes;
* counts — a class with fewer than :data:`FEW` images, or outnumbered :data:`OUTNUMBERED` to 1.

::

    <out>/                 (--out; default: audit-<DATA's name> in the current folder)
      audit.csv            one row per finding: path,issue,score,given,suggested,other,split,detail,sha256,other_sha256
      audit.html           one self-contained page: the summary, then a gallery per kind of finding
"""
import base64
import csv
import dataclasses
import html
import io
import os
import time

import numpy as np

from .checks import DEFAULT_SPLIT, check_positive, check_seed, image_size as parse_image_size, split_fractions
from .errors import SmallvisionError
from .novelty import NEIGHBOURS, neighbour_distance  # the outlier score is predict's novelty score
from .progress import log

ISSUES = ("label", "near_duplicate", "leak", "outlier", "quality")
FOLDS = 5
# copies: candidates are each image's COPY_NEIGHBOURS nearest by the pooled features (cosine above
# CANDIDATE_SIMILARITY); a pair is a copy when the mean of that cosine and the best correlation of
# their small grey thumbnails (shifted by up to THUMB_SHIFT pixels) exceeds COPY_SCORE. Tuned on one
# draw of 100 planted near-copies (bench/audit.py: the lowest of them 0.795, the untouched photos'
# highest pairs besides their two real copies 0.820, 0.819, 0.794); measured on other draws.
COPY_NEIGHBOURS = 3
CANDIDATE_SIMILARITY = 0.75
COPY_SCORE = 0.80
THUMB, THUMB_SHIFT = 32, 4
# flagged when the score is this many robust deviations above the data's median: set on half of the
# planted photos of other things in bench/audit.py (their lowest: 2.97; the 5,000 photos' 99th
# percentile: 2.23), measured on the other half
OUTLIER_MADS = 2.5
FEW = 10  # images: a class with fewer is called out
OUTNUMBERED = 3.0  # a class with this many times fewer images than the largest is called out
# quality, on the decoded image (0..255) and the file's own size
DARK, LIGHT = 30.0, 235.0  # mean brightness
BLURRY = 20.0  # variance of the Laplacian of the grey image (at the decode size)
BLANK = 2.0  # entropy of the grey histogram, in bits (a photo has ~7)
TINY = 64  # pixels: the shorter side of the file
ODD_ASPECT = 3.0  # the longer side over the shorter
SHOWN = 60  # findings of each kind shown in the page (audit.csv has them all)


@dataclasses.dataclass(frozen=True)
class Finding:
    """One suspicious image (or pair)."""

    path: str  # relative to DATA, as the scan writes it
    issue: str  # one of ISSUES
    score: float  # higher: more suspicious
    given: str  # the class of its folder
    suggested: str = ""  # label: the class the features point to
    other: str = ""  # a copy: the other file of the pair
    split: str = ""  # its split (a leak: "test<-train", its split and the other's)
    detail: str = ""  # quality: what is wrong; a copy: "other class" when the pair's labels differ
    sha256: str = ""  # of the file at path when audited: ``data apply`` refuses a decision on a changed file
    other_sha256: str = ""  # of the other file of a copy

    @classmethod
    def columns(cls):
        """audit.csv's columns: the fields, in order."""
        return [f.name for f in dataclasses.fields(cls)]


@dataclasses.dataclass(frozen=True)
class Audit:
    """What :func:`audit` found and wrote."""

    data: str
    folder: str
    backbone: str
    images: int
    findings: tuple  # of Finding, sorted by issue, then score (highest first)
    notes: tuple  # lines about the class counts
    class_counts: dict  # {class: {split: n}}
    seconds: float

    @property
    def csv(self):
        return os.path.join(self.folder, "audit.csv")

    @property
    def html(self):
        return os.path.join(self.folder, "audit.html")

    def of(self, issue):
        return [f for f in self.findings if f.issue == issue]

    def counts(self):
        return {issue: len(self.of(issue)) for issue in ISSUES}

    def summary(self, top=3):
        """A few lines for a terminal: counts per issue and the worst of each."""
        lines = [f"audit of {self.data}: {self.images} images, features of {self.backbone}, {self.seconds:.1f} s"]
        lines += [f"note: {n}" for n in self.notes]
        for issue in ISSUES:
            found = self.of(issue)
            lines.append(f"{issue}: {len(found)}")
            for f in found[:top]:
                what = {"label": f"given {f.given}, looks like {f.suggested}",
                        "near_duplicate": f"~ {f.other}", "leak": f"~ {f.other} ({f.split})",
                        "outlier": f"given {f.given}", "quality": f.detail}[issue]
                lines.append(f"  {f.score:.3f}  {f.path}  {what}")
        lines.append(f"wrote {self.csv} and {self.html}")
        return "\n".join(lines)


def audit(data, out=None, backbone=None, image_size=None, folds=FOLDS, seed=0, split=DEFAULT_SPLIT, progress=True):
    """Audit the image folder ``data`` on a pretrained backbone's cached features.

    Args:
        data: folder with one sub-folder per class, or train/ validation/ test/ holding them.
        out: the folder to write audit.csv and audit.html into (default: ``audit-<name of
            data>`` in the current folder); never inside ``data``.
        backbone: the conv base (default: the ``features`` strategy's).
        image_size: the decode size (default: the backbone's native size).
        folds: K of the out-of-fold probabilities.
        seed: the folds' shuffle, and the split when ``data`` has no split folders.
        split: train,validation,test fractions when ``data`` has no split folders.

    Returns:
        An :class:`Audit`.
    """
    t0 = time.perf_counter()
    data, out = data_and_out(data, out, "audit")
    folds = check_positive("folds", folds, integer=True)
    if folds < 2:
        raise SmallvisionError(f"folds must be at least 2. Received: folds={folds}")
    seed = check_seed(seed)
    fractions = split_fractions(split)
    f = load_features(data, backbone, image_size, fractions, seed, progress)
    x, entries, splits, labels, names = f.x, f.entries, f.splits, f.labels, f.names
    paths = [e.path for e in entries]
    if progress:
        log(f"audit: {len(paths)} images of {len(names)} classes; looking for wrong labels, copies, outliers")
    findings = (label_issues(x, labels, names, paths, splits, folds, seed)
                + copies(x, entries, names, splits, f.images)
                + outliers(x, labels, names, paths, splits)
                + quality(f.images, entries, names, splits))
    order = {issue: k for k, issue in enumerate(ISSUES)}
    sha = {e.path: e.sha256 for e in entries}
    findings = [dataclasses.replace(f, sha256=sha[f.path], other_sha256=sha.get(f.other, "")) for f in findings]
    findings.sort(key=lambda f: (order[f.issue], -f.score, f.path))
    counts = {c: {name: int((labels[splits == name] == k).sum()) for name in dict.fromkeys(splits)}
              for k, c in enumerate(names)}
    result = Audit(data=data, folder=out, backbone=f.backbone, images=len(paths), findings=tuple(findings),
                   notes=tuple(count_notes(counts)), class_counts=counts, seconds=round(time.perf_counter() - t0, 1))
    os.makedirs(out, exist_ok=True)
    write_csv(result)
    write_html(result)
    remember(result)
    return result


def data_and_out(data, out, verb):
    """``(data, the folder to write into)`` for a verb that reads a data folder and writes a folder of
    its own: ``out``, or ``<verb>-<name of data>`` in the current folder; never inside ``data`` (the
    next scan would take it for a class)."""
    data = os.fspath(data)
    if not os.path.isdir(data):
        raise SmallvisionError(f"{data}: no such data folder")
    root = os.path.abspath(data)
    out = os.path.abspath(out or os.path.join(os.getcwd(), f"{verb}-{os.path.basename(os.path.normpath(root))}"))
    if out == root or out.startswith(root + os.sep):
        raise SmallvisionError(f"{out}: inside the data folder {data}; the {verb} writes elsewhere (--out)")
    return data, out


def _pointer(data):
    import hashlib

    from .data.cache import default_cache_root
    key = hashlib.sha256(os.path.abspath(data).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return os.path.join(default_cache_root(), "audits", key + ".json")


def remember(result):
    """Note where the latest audit of its data folder is (under the cache root), for the reports."""
    from ._io import write_json_atomic
    try:
        os.makedirs(os.path.dirname(_pointer(result.data)), exist_ok=True)
        write_json_atomic(_pointer(result.data), {"data": os.path.abspath(result.data), "folder": result.folder,
                                                  "written": time.strftime("%Y-%m-%d %H:%M"),
                                                  "counts": result.counts()})
    except OSError:
        pass  # a read-only cache: the reports just do not link it


def latest_audit(data):
    """``{"data", "folder", "written", "counts", "html"}`` of the latest audit of ``data`` whose page
    is still there, or None."""
    from ._io import read_json
    try:
        found = read_json(_pointer(data))
    except (OSError, ValueError):
        return None
    page = os.path.join(str(found.get("folder", "")), "audit.html")
    if found.get("data") != os.path.abspath(data) or not os.path.isfile(page):
        return None
    return dict(found, html=page)


@dataclasses.dataclass(frozen=True)
class Features:
    """Every image of a data folder with its pooled frozen features (unit length), in split order."""

    x: np.ndarray  # [n, d] float32
    entries: list  # scan.Entry per row
    splits: np.ndarray  # split name per row
    labels: np.ndarray  # class index per row (the folder's)
    names: list  # class names
    images: object  # the decoded images, row by row (iterable)
    backbone: str


def load_features(data, backbone=None, image_size=None, fractions=DEFAULT_SPLIT, seed=0, progress=True):
    """Scan, split and decode ``data`` and read the ``features`` strategy's cached pooled features
    of every image (extracting only what the cache lacks)."""
    from . import strategies
    from .data import prepare
    from .data.decode import DecodeSpec
    from .strategies.features import cached_features

    strat = strategies.get("features")
    options = strat.parse_options({"backbone": backbone, "head": "gap"})
    size = parse_image_size(image_size) if image_size is not None else strat.default_image_size(options)
    prep = prepare(data, DecodeSpec(*size), fractions, seed, progress=progress)
    feats = cached_features(prep, options, progress)
    rows = [(name, p) for name, positions in prep.splits.items() for p in positions]
    entries = [prep.index.entries[p] for _, p in rows]
    x = np.concatenate([np.asarray(feats[name].take(np.arange(len(feats[name]))), np.float32)
                        for name, _ in prep.splits.items()])
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return Features(x, entries, np.array([name for name, _ in rows]), np.array([e.label for e in entries]),
                    list(prep.class_names), _Chunks([prep.images[name] for name, _ in prep.splits.items()]),
                    options.backbone)


# -- the checks -------------------------------------------------------------------------------

def out_of_fold(x, labels, num_classes, folds, seed):
    """``[n, num_classes]`` probabilities, each row from a logistic regression fitted on the other
    folds (stratified; fewer folds when a class has fewer images than ``folds``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    k = min(folds, int(np.bincount(labels, minlength=num_classes).min()))
    probs = np.zeros((len(labels), num_classes))
    for train, held in StratifiedKFold(k, shuffle=True, random_state=seed).split(x, labels):
        model = LogisticRegression(C=LABEL_C, max_iter=2000).fit(x[train], labels[train])
        probs[np.ix_(held, model.classes_)] = model.predict_proba(x[held])
    return probs


LABEL_C = 3.0  # the out-of-fold regression's regularisation on unit-length features (bench/audit.py: C 1-30 tried)


def label_issues(x, labels, names, paths, splits, folds, seed):
    """Confident learning on out-of-fold probabilities: the images whose given class is likely wrong."""
    counts = np.bincount(labels, minlength=len(names))
    if counts.min() < 2:
        return []  # a class of one image: nothing to hold out (count_notes says so)
    from cleanlab.filter import find_label_issues
    probs = out_of_fold(x, labels, len(names), folds, seed)
    found = find_label_issues(labels, probs, filter_by="prune_by_noise_rate")
    out = []
    for i in np.flatnonzero(found):
        out.append(Finding(paths[i], "label", round(float(1 - probs[i, labels[i]]), 4), names[labels[i]],
                           names[int(np.argmax(probs[i]))], split=str(splits[i])))
    return out


_SPLIT_ORDER = {"train": 0, "validation": 1, "test": 2}


def nearest_pairs(x, k=COPY_NEIGHBOURS, threshold=CANDIDATE_SIMILARITY, block=1024):
    """``{(i, j): cosine}`` (i < j): each unit row's ``k`` nearest other rows above ``threshold``."""
    k = max(1, min(k, len(x) - 1))
    out = {}
    for start in range(0, len(x), block):
        s = x[start:start + block] @ x.T
        s[np.arange(len(s)), np.arange(start, start + len(s))] = -1
        top = np.argpartition(-s, k - 1, axis=1)[:, :k] if len(x) > 1 else np.zeros((len(s), 0), int)
        for r, js in enumerate(top):
            for j in js:
                if s[r, j] > threshold:
                    i = r + start
                    out[(min(i, int(j)), max(i, int(j)))] = float(s[r, j])
    return out


def thumbnails(images):
    """Grey (THUMB + 2 THUMB_SHIFT)-pixel squares of the decoded images (any iterable, read once,
    never held whole), as float32."""
    import cv2
    side = THUMB + 2 * THUMB_SHIFT
    small = [cv2.resize(cv2.cvtColor(np.ascontiguousarray(im), cv2.COLOR_RGB2GRAY), (side, side),
                        interpolation=cv2.INTER_AREA) for im in images]
    return np.stack(small).astype(np.float32) if small else np.zeros((0, side, side), np.float32)


def _unit(a):
    a = a - a.mean(axis=(-1, -2), keepdims=True)
    return a / np.maximum(np.linalg.norm(a.reshape(len(a), -1), axis=1), 1e-6)[:, None, None]


def thumbnail_correlation(thumbs, pairs):
    """For each pair (i, j): the best correlation of i's centre with j's thumbnail shifted by up to
    THUMB_SHIFT pixels (and the other way round): the same photo, cropped a little, correlates."""
    if not pairs:
        return np.zeros(0)
    a, b = (np.array(v) for v in zip(*pairs))
    s, t = THUMB_SHIFT, THUMB
    centre = _unit(thumbs[:, s:s + t, s:s + t])
    best = np.full(len(a), -1.0)
    for dy in range(0, 2 * s + 1, 2):
        for dx in range(0, 2 * s + 1, 2):
            window = _unit(thumbs[:, dy:dy + t, dx:dx + t])
            best = np.maximum(best, np.maximum((centre[a] * window[b]).sum((1, 2)), (centre[b] * window[a]).sum((1, 2))))
    return best


def copies(x, entries, names, splits, images=None):
    """Near-copies: within a split, and leaks across splits (the row names the later split's file).
    ``images``: the decoded images in row order (for the thumbnails)."""
    pairs = nearest_pairs(x)
    keys = [p for p in sorted(pairs) if entries[p[0]].sha256 != entries[p[1]].sha256]  # same bytes: the scan's
    corr = thumbnail_correlation(thumbnails(images), keys) if keys else np.zeros(0)
    out = []
    for (i, j), c in zip(keys, corr):
        sim = (pairs[(i, j)] + float(c)) / 2
        if sim <= COPY_SCORE:
            continue
        a, b = (i, j) if _SPLIT_ORDER.get(splits[i], 3) <= _SPLIT_ORDER.get(splits[j], 3) else (j, i)
        issue = "near_duplicate" if splits[a] == splits[b] else "leak"
        out.append(Finding(entries[b].path, issue, round(sim, 4), names[entries[b].label], other=entries[a].path,
                           split=str(splits[b]) if issue == "near_duplicate" else f"{splits[b]}<-{splits[a]}",
                           detail="other class" if entries[a].label != entries[b].label else ""))
    return out


def outlier_threshold(scores):
    """Median + :data:`OUTLIER_MADS` robust deviations of the data's own scores."""
    median = float(np.median(scores))
    mad = 1.4826 * float(np.median(np.abs(scores - median)))
    return median + OUTLIER_MADS * max(mad, 1e-6)


def outlier_scores(x, splits):
    """Every row's outlier score: mean cosine distance to its nearest training rows (None: too few)."""
    train = np.flatnonzero(splits == "train") if (splits == "train").any() else np.arange(len(x))
    if len(train) < 3:
        return None
    same = np.full(len(x), -1)
    same[train] = np.arange(len(train))
    return neighbour_distance(x, x[train], same=same)


def outliers(x, labels, names, paths, splits):
    """Images unlike every training image: far from their nearest training neighbours."""
    scores = outlier_scores(x, splits)
    if scores is None:
        return []
    threshold = outlier_threshold(scores)
    return [Finding(paths[i], "outlier", round(float(scores[i]), 4), names[labels[i]], split=str(splits[i]),
                    detail=f"threshold {threshold:.3f}") for i in np.flatnonzero(scores > threshold)]


class _Chunks:
    """The decoded images of several splits, one after the other, read a chunk at a time."""

    def __init__(self, parts, chunk=256):
        self.parts, self.chunk = parts, chunk

    def __iter__(self):
        for part in self.parts:
            for start in range(0, len(part), self.chunk):
                yield from part.take(np.arange(start, min(start + self.chunk, len(part))))


def quality(images, entries, names, splits):
    """Dark, light, blurry, nearly blank, tiny and oddly shaped images (``images``: the decoded
    images in the order of ``entries``)."""
    import cv2
    out = []
    for i, (im, e) in enumerate(zip(images, entries)):
        grey = cv2.cvtColor(np.ascontiguousarray(im), cv2.COLOR_RGB2GRAY)
        problems = []
        brightness = float(grey.mean())
        if brightness < DARK:
            problems.append((f"dark (mean brightness {brightness:.0f} of 255)", (DARK - brightness) / DARK))
        if brightness > LIGHT:
            problems.append((f"light (mean brightness {brightness:.0f} of 255)", (brightness - LIGHT) / (255 - LIGHT)))
        hist = np.bincount(grey.ravel(), minlength=256) / grey.size
        entropy = float(-(hist[hist > 0] * np.log2(hist[hist > 0])).sum())
        if entropy < BLANK:
            problems.append((f"nearly blank (entropy {entropy:.2f} bits)", (BLANK - entropy) / BLANK))
        else:
            sharp = float(cv2.Laplacian(grey, cv2.CV_64F).var())
            if sharp < BLURRY:
                problems.append((f"blurry (Laplacian variance {sharp:.1f})", (BLURRY - sharp) / BLURRY))
        short, long_ = sorted((e.width, e.height))
        if short < TINY:
            problems.append((f"tiny ({e.width}x{e.height})", (TINY - short) / TINY))
        if short and long_ / short > ODD_ASPECT:
            problems.append((f"odd shape ({e.width}x{e.height})", min(1.0, (long_ / short - ODD_ASPECT) / ODD_ASPECT)))
        if problems:
            out.append(Finding(e.path, "quality", round(max(s for _, s in problems), 4), names[e.label],
                               split=str(splits[i]), detail="; ".join(p for p, _ in problems)))
    return out


def count_notes(counts):
    """Lines on classes with too few images, or heavily outnumbered."""
    totals = {c: sum(per.values()) for c, per in counts.items()}
    notes = [f"class {c} has only {n} images (fewer than {FEW}: too few to learn or to judge)"
             for c, n in totals.items() if n < FEW]
    largest = max(totals.values()) if totals else 0
    notes += [f"class {c} is outnumbered {largest / max(n, 1):.1f} to 1 by the largest class "
              "(consider --class-weight balanced, or more images of it)"
              for c, n in totals.items() if n and largest / n >= OUTNUMBERED]
    return notes


# -- what it writes ---------------------------------------------------------------------------

def write_csv(result):
    from ._io import write_text_atomic
    sink = io.StringIO()
    w = csv.writer(sink)
    w.writerow(Finding.columns())
    for f in result.findings:
        w.writerow(dataclasses.astuple(f))
    write_text_atomic(result.csv, sink.getvalue())


def _thumbnail(path, size=128):
    """A JPEG data URI of the file, or None when it cannot be read any more."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=80)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    except Exception:
        return None


_CSS = """body{font-family:system-ui,sans-serif;max-width:1240px;margin:2em auto;padding:0 1em;color:#222}
.gallery{display:flex;flex-wrap:wrap;gap:.6em}.item{border:1px solid #ccc;padding:.3em;width:150px;font-size:.78em;
overflow-wrap:anywhere}.pair{width:300px}.pair img{width:145px}.item img{max-width:100%;display:inline-block}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}
td:first-child,th:first-child{text-align:left}.muted{color:#666}"""
_TITLES = {"label": "Labels that look wrong", "near_duplicate": "Near-copies within a split",
           "leak": "Leaks: near-copies across splits", "outlier": "Photos unlike the others",
           "quality": "Image quality"}
_EXPLAIN = {
    "label": "Out-of-fold probabilities of a logistic regression on the features, then confident learning "
             "(cleanlab). Score: 1 - probability of the given class.",
    "near_duplicate": "Different files that are the same photo: nearest neighbours by the features whose small "
                      f"thumbnails also correlate (score: the mean of both, > {COPY_SCORE}).",
    "leak": "A validation or test photo with a near-copy in an earlier split: its figures measure memory.",
    "outlier": f"Mean cosine distance to the {NEIGHBOURS} nearest training photos, beyond a robust threshold.",
    "quality": "Very dark or bright, blurry, nearly blank, tiny or oddly shaped.",
}


_SCRIPT = """function csvField(v){return /[",\\r\\n]/.test(v)?'"'+v.replace(/"/g,'""')+'"':v}
function decisionsCsv(){const rows=["path,action,to,sha256"],seen=new Set();
document.querySelectorAll("select.decision").forEach(s=>{if(s.value==="keep")return;
const v=s.value,i=v.indexOf(":"),other=v==="remove-other",path=other?s.dataset.other:s.dataset.path;
if(seen.has(path))return;seen.add(path);
rows.push([path,other?"remove":i<0?v:v.slice(0,i),i<0?"":v.slice(i+1),other?s.dataset.otherSha256:s.dataset.sha256].map(csvField).join(","))});return rows.join("\\n")+"\\n"}
function chosen(){document.getElementById("chosen").textContent=decisionsCsv().trim().split("\\n").length-1}
function decide(el){document.querySelectorAll("select.decision").forEach(s=>{if(s!==el&&s.dataset.path===el.dataset.path
&&[...s.options].some(o=>o.value===el.value))s.value=el.value});chosen()}
function downloadDecisions(){const a=document.createElement("a");
a.href=URL.createObjectURL(new Blob([decisionsCsv()],{type:"text/csv"}));a.download="decisions.csv";
document.body.appendChild(a);a.click();a.remove()}"""


def _decision(f, classes):
    """The finding's choice: keep, relabel (the suggested class first), or remove (quarantine);
    for a copy, remove either file (a leak: the earlier split's copy first, keeping the test set whole)."""
    e = html.escape
    if f.other:
        options = ["keep"] + (["remove-other", "remove"] if f.issue == "leak" else ["remove", "remove-other"])
        words = {"keep": "keep both", "remove": f"remove {f.path}", "remove-other": f"remove {f.other}"}
        options = [f'<option value="{v}">{e(words[v])}</option>' for v in options]
    else:
        others = sorted((c for c in classes if c != f.given), key=lambda c: c != f.suggested)
        options = ['<option value="keep">keep</option>'] + [
            f'<option value="relabel:{e(c)}">relabel as {e(c)}</option>' for c in others] + [
            '<option value="remove">remove</option>']
    return (f'<select class="decision" aria-label="decision for {e(f.path)}" data-path="{e(f.path)}" '
            f'data-sha256="{e(f.sha256)}" data-other="{e(f.other)}" data-other-sha256="{e(f.other_sha256)}" '
            f'onchange="decide(this)">{"".join(options)}</select>')


def write_html(result):
    from ._io import write_text_atomic
    e = html.escape
    counts = result.counts()
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>smallvision audit of {e(os.path.basename(os.path.normpath(result.data)))}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Audit of {e(result.data)}</h1>",
             f"<p>{result.images} images, features of {e(result.backbone)}, {result.seconds:.1f} s. Each finding is "
             "a question to look at, not a verdict; audit.csv lists them all.</p>",
             '<table id="summary"><thead><tr><th>issue</th><th>found</th></tr></thead><tbody>']
    parts += [f"<tr><td>{e(issue)}</td><td>{counts[issue]}</td></tr>" for issue in ISSUES]
    parts.append("</tbody></table>")
    splits = sorted({s for per in result.class_counts.values() for s in per}, key=lambda s: _SPLIT_ORDER.get(s, 3))
    parts.append('<table id="classes"><thead><tr><th>class</th>' + "".join(f"<th>{e(s)}</th>" for s in splits)
                 + "</tr></thead><tbody>")
    parts += [f"<tr><td>{e(c)}</td>" + "".join(f"<td>{per.get(s, 0)}</td>" for s in splits) + "</tr>"
              for c, per in result.class_counts.items()]
    parts.append("</tbody></table>")
    parts += [f'<p class="note">{e(n)}</p>' for n in result.notes]
    classes = list(result.class_counts)
    parts.append('<p id="decide">Choose what to do with a finding under its picture, then <button id="download" '
                 'type="button" onclick="downloadDecisions()">download decisions.csv</button> '
                 '(<span id="chosen">0</span> chosen) and run <code>smallvision data apply '
                 f'{e(result.data)} decisions.csv</code>: relabelled files move to the other class folder, removed '
                 'ones into a hidden quarantine folder; <code>--undo</code> puts everything back.</p>')
    for issue in ISSUES:
        found = result.of(issue)
        parts.append(f'<h2 id="{issue}">{e(_TITLES[issue])} ({len(found)})</h2><p class="muted">{e(_EXPLAIN[issue])}'
                     + (f" The worst {SHOWN} are shown." if len(found) > SHOWN else "") + "</p>")
        if not found:
            parts.append("<p>None found.</p>")
            continue
        parts.append(f'<div class="gallery" id="gallery-{issue}">')
        for f in found[:SHOWN]:
            pics = [f.path] + ([f.other] if f.other else [])
            imgs = "".join(f'<img alt="{e(p)}" src="{_thumbnail(os.path.join(result.data, p)) or ""}">' for p in pics)
            words = {"label": f"given <b>{e(f.given)}</b>, looks like <b>{e(f.suggested)}</b>",
                     "outlier": f"given {e(f.given)}", "quality": e(f.detail)}.get(
                issue, f"{e(f.path)} ~ {e(f.other)}" + (f" ({e(f.split)})" if issue == "leak" else "")
                + (" <b>labelled differently</b>" if f.detail else ""))
            parts.append(f'<div class="item{" pair" if f.other else ""}">{imgs}<br>{e(f.path)}<br>{words}<br>'
                         f"score {f.score:.3f}<br>{_decision(f, classes)}</div>")
        parts.append("</div>")
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    write_text_atomic(result.html, "\n".join(parts))
