"""``smallvision curve DATA``: how many images are enough — test accuracy against training images
per class, and what 2x and 4x the data would likely give.

On the ``features`` strategy's cached frozen features (the audit's, :func:`.audit.load_features`):
for each size of a geometric range up to every training image, several seeded draws of that
many training images per class, a logistic regression fitted on them, and its accuracy on the
test split (validation when there is none). Seconds, not hours: nothing is trained through the
network.

The extrapolation fits two curve families to the error ``e(n)`` at ``n`` images per class —
a power law ``a n^-b`` (no floor: the optimistic one) and a power law with a floor
``a n^-b + c`` (the pessimistic one) — each weighted by how well its points are known (the
spread of the draws, and the test set's own binomial noise). The prediction is their average;
the interval spans both families over a bootstrap of the draws, widened by the test set's
noise at the predicted accuracy (5th to 95th percentile). Learning-curve studies find neither
family right everywhere (Viering & Loog, "The shape of learning curves", 2022); the two bracket
the usual shapes. bench/curve.py measures it: fitted on the sizes <= 50 per class of dogs vs
cats, it predicts the accuracy at 1,000 per class.

::

    <out>/                 (--out; default: curve-<DATA's name> in the current folder)
      curve.csv            size,seed,images,accuracy: one row per draw
      curve.md             the table, the fit and the predictions, in Markdown
      curve.html           the same with the plot, self-contained
      curve.png            the plot
"""
import base64
import csv
import dataclasses
import html
import io
import os
import time
import warnings

import numpy as np

from .checks import DEFAULT_SPLIT, check_positive, check_seed, split_fractions
from .errors import SmallvisionError
from .progress import log

SIZES = 8  # points of the geometric range
SEEDS = 5  # draws per size
SMALLEST = 5  # images per class at the first point (fewer when the largest class has fewer than 15)
C = 3.0  # the regression's regularisation on unit-length features (as the audit's out-of-fold one)
BOOTSTRAP = 200
LEVEL = 0.90  # the interval's coverage


@dataclasses.dataclass(frozen=True)
class Point:
    size: int  # training images per class asked for (a class with fewer gives all it has)
    images: int  # training images used
    accuracies: tuple  # one per seed

    @property
    def mean(self):
        return float(np.mean(self.accuracies))

    @property
    def spread(self):
        return float(np.std(self.accuracies))


@dataclasses.dataclass(frozen=True)
class Prediction:
    size: int  # images per class
    accuracy: float  # the fit's estimate
    low: float  # the interval
    high: float


@dataclasses.dataclass(frozen=True)
class Curve:
    """What :func:`curve` measured, fitted and wrote."""

    data: str
    folder: str
    backbone: str
    evaluated_on: str  # the split the accuracies are of
    evaluation_images: int
    points: tuple  # of Point, by size
    fitted_up_to: int  # the largest size the fit used
    predictions: tuple  # of Prediction: 2x and 4x the largest size (or the sizes asked)
    seconds: float

    @property
    def files(self):
        return {k: os.path.join(self.folder, f"curve.{k}") for k in ("csv", "md", "html", "png")}

    def summary(self):
        lines = [f"curve of {self.data}: {self.evaluated_on} accuracy ({self.evaluation_images} images) of a "
                 f"logistic regression on {self.backbone} features, {len(self.points[0].accuracies)} draws per size, "
                 f"{self.seconds:.1f} s"]
        lines += [f"  {p.size:>6} per class  {100 * p.mean:6.2f} % (+- {100 * p.spread:.2f})" for p in self.points]
        lines += [f"  {q.size:>6} per class  {100 * q.accuracy:6.2f} % predicted ({100 * LEVEL:.0f} % interval "
                  f"{100 * q.low:.2f}-{100 * q.high:.2f}; fitted on sizes up to {self.fitted_up_to})"
                  for q in self.predictions]
        lines.append(f"wrote {self.files['html']} and {self.files['md']}")
        return "\n".join(lines)


def curve(data, out=None, backbone=None, image_size=None, sizes=SIZES, seeds=SEEDS, fit_up_to=None, predict=None,
          seed=0, split=DEFAULT_SPLIT, progress=True):
    """Accuracy against training images per class on ``data``, and its extrapolation.

    Args:
        data: folder with one sub-folder per class, or train/ validation/ test/ holding them.
        out: the folder to write into (default: ``curve-<name of data>`` in the current folder);
            never inside ``data``.
        backbone, image_size: the features' backbone and decode size (default: the ``features``
            strategy's).
        sizes: points of the geometric range from :data:`SMALLEST` to every training image.
        seeds: draws per size.
        fit_up_to: fit the curve on the sizes up to this many images per class only (default: all).
        predict: the sizes (images per class) to predict (default: 2x and 4x the largest).
        seed: the first draw's seed, and the split's when ``data`` has no split folders.
        split: train,validation,test fractions when ``data`` has no split folders.

    Returns:
        A :class:`Curve`.
    """
    from .audit import data_and_out, load_features
    t0 = time.perf_counter()
    data, out = data_and_out(data, out, "curve")
    sizes = check_positive("sizes", sizes, integer=True)
    seeds = check_positive("seeds", seeds, integer=True)
    seed = check_seed(seed)
    fractions = split_fractions(split)
    if fit_up_to is not None:
        fit_up_to = check_positive("fit_up_to", fit_up_to, integer=True)
    predict = [check_positive("predict", p, integer=True) for p in (predict or [])]
    f = load_features(data, backbone, image_size, fractions, seed, progress)
    train = np.flatnonzero(f.splits == "train")
    held_name = "test" if (f.splits == "test").any() else "validation"
    held = np.flatnonzero(f.splits == held_name)
    per_class = np.bincount(f.labels[train], minlength=len(f.names))
    if len(held) == 0 or per_class.min() < 2:
        raise SmallvisionError(f"{data}: too few images for a curve (needs 2 training images of every class and a "
                               f"{held_name} split; has {dict(zip(f.names, per_class.tolist()))})")
    largest = int(per_class.max())
    smallest = min(SMALLEST, max(1, largest // 3))  # a small class set still gets a range
    grid = sorted({int(round(v)) for v in np.geomspace(smallest, largest, sizes)})
    if progress:
        log(f"curve: {len(grid)} sizes x {seeds} draws on {len(train)} training images, "
            f"{held_name} accuracy on {len(held)}")
    points = tuple(measure(f.x, f.labels, train, held, grid, range(seed, seed + seeds)))
    fit_on = [p for p in points if fit_up_to is None or p.size <= fit_up_to]
    if len(fit_on) < 3 and fit_up_to is None:
        raise SmallvisionError(f"{data}: only {len(points)} sizes between {smallest} and {largest} training images "
                               "per class; a curve needs 3 (more images, or --sizes)")
    if len(fit_on) < 3:
        raise SmallvisionError(f"fit_up_to={fit_up_to}: leaves {len(fit_on)} sizes to fit (needs 3; the sizes are "
                               f"{', '.join(str(p.size) for p in points)})")
    targets = predict or [2 * largest, 4 * largest]
    predictions = tuple(extrapolate(fit_on, len(held), targets, seed))
    result = Curve(data, out, f.backbone, held_name, len(held), points, fit_on[-1].size, predictions,
                   round(time.perf_counter() - t0, 1))
    os.makedirs(out, exist_ok=True)
    write(result)
    return result


def measure(x, labels, train, held, sizes, seeds):
    """A :class:`Point` per size: a logistic regression on ``size`` random training rows per class
    (all of a class that has fewer), its accuracy on the held-out rows, per seed. A size that takes
    every training image is one fit (the draws would all be the same)."""
    from sklearn.linear_model import LogisticRegression
    classes = np.unique(labels[train])
    pools = [train[labels[train] == k] for k in classes]
    out = []
    for size in sizes:
        accs = []
        everything = all(size >= len(p) for p in pools)
        for s in seeds:
            if everything and accs:
                accs.append(accs[0])
                continue
            rng = np.random.default_rng(s)
            rows = np.concatenate([rng.choice(p, min(size, len(p)), replace=False) for p in pools])
            model = LogisticRegression(C=C, max_iter=2000).fit(x[rows], labels[rows])
            accs.append(float((model.predict(x[held]) == labels[held]).mean()))
        out.append(Point(size, int(sum(min(size, len(p)) for p in pools)), tuple(accs)))
    return out


def _power(n, a, b):
    return a * np.power(n, -b)


def _power_floor(n, a, b, c):
    return a * np.power(n, -b) + c


def _fit(sizes, errors, sigma):
    """Both families fitted to the errors; returns the two fitted functions (None: did not fit)."""
    from scipy.optimize import curve_fit
    out = []
    for family, p0, bounds in ((_power, (0.1, 0.5), ([0, 0], [10, 3])),
                               (_power_floor, (0.1, 0.5, 0.0), ([0, 0, 0], [10, 3, 1]))):
        try:
            with warnings.catch_warnings():  # three points, three parameters: no covariance, and none is used
                warnings.simplefilter("ignore")
                params, _ = curve_fit(family, sizes, errors, p0=p0, sigma=sigma, bounds=bounds, maxfev=20000)
            out.append(lambda n, f=family, p=params: f(np.asarray(n, float), *p))
        except (RuntimeError, ValueError):
            out.append(None)
    return out


def _errors(points, evaluation_images, rng=None):
    """Per point: the mean error (of a bootstrap of its draws when ``rng``) and how well it is known."""
    floor = 0.5 / evaluation_images  # an error of 0 says less than "none in this test set"
    errs, sigma = [], []
    for p in points:
        acc = np.asarray(p.accuracies)
        if rng is not None:
            acc = rng.choice(acc, len(acc))
        e = max(1 - float(acc.mean()), floor)
        errs.append(e)
        sigma.append(np.sqrt(acc.var() / len(acc) + e * (1 - e) / evaluation_images))
    return np.array(errs), np.array(sigma)


def extrapolate(points, evaluation_images, targets, seed=0):
    """A :class:`Prediction` per target size from the two families over a bootstrap of the draws."""
    sizes = np.array([p.size for p in points], float)
    rng = np.random.default_rng(seed)
    central = _fit(sizes, *_errors(points, evaluation_images))
    draws = [_fit(sizes, *_errors(points, evaluation_images, rng)) for _ in range(BOOTSTRAP)]
    out = []
    for t in targets:
        fits = [g(t) for g in central if g is not None]
        if not fits:
            raise SmallvisionError("the curve did not fit the measured points")
        estimate = 1 - float(np.mean(fits))
        spread = np.array([1 - g(t) for pair in draws for g in pair if g is not None])
        noise = np.sqrt(max(estimate * (1 - estimate), 1e-12) / evaluation_images)
        z = 1.6449  # the normal's 95th percentile: LEVEL = 0.90 two-sided
        low = float(np.percentile(spread, 100 * (1 - LEVEL) / 2)) - z * noise
        high = float(np.percentile(spread, 100 * (1 + LEVEL) / 2)) + z * noise
        out.append(Prediction(int(t), estimate, float(max(0.0, min(low, estimate))), float(min(1.0, max(high, estimate)))))
    return out


# -- what it writes ---------------------------------------------------------------------------

def _plot(result):
    from .plots import _png, _pyplot
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for p in result.points:
        ax.plot([p.size] * len(p.accuracies), [100 * a for a in p.accuracies], ".", color="0.6", markersize=4)
    ax.plot([p.size for p in result.points], [100 * p.mean for p in result.points], "o-", color="C0",
            label=f"measured ({result.evaluated_on}, mean of the draws)")
    for q in result.predictions:
        ax.errorbar([q.size], [100 * q.accuracy], yerr=[[100 * (q.accuracy - q.low)], [100 * (q.high - q.accuracy)]],
                    fmt="s", color="C3", capsize=4)
    ax.plot([], [], "s", color="C3", label=f"predicted, {100 * LEVEL:.0f} % interval (fit on <= {result.fitted_up_to})")
    ax.set_xscale("log")
    ax.set_xlabel("training images per class")
    ax.set_ylabel("accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"How many images are enough: {os.path.basename(os.path.normpath(result.data))}")
    return _png(fig)


def _table(result):
    rows = [("images per class", "images", f"{result.evaluated_on} accuracy", "spread of the draws", "")]
    rows += [(str(p.size), str(p.images), f"{100 * p.mean:.2f} %", f"+- {100 * p.spread:.2f}",
              "fitted" if p.size <= result.fitted_up_to else "") for p in result.points]
    rows += [(str(q.size), "", f"{100 * q.accuracy:.2f} % predicted",
              f"{100 * LEVEL:.0f} % interval {100 * q.low:.2f}-{100 * q.high:.2f}", "") for q in result.predictions]
    return rows


def write(result):
    from ._io import write_bytes_atomic, write_text_atomic
    files = result.files
    sink = io.StringIO()
    w = csv.writer(sink)
    w.writerow(["size", "seed", "images", "accuracy"])
    for p in result.points:
        for k, a in enumerate(p.accuracies):
            w.writerow([p.size, k, p.images, f"{a:.6f}"])
    write_text_atomic(files["csv"], sink.getvalue())
    png = _plot(result)
    write_bytes_atomic(files["png"], png)
    rows = _table(result)
    intro = (f"{result.evaluated_on.capitalize()} accuracy ({result.evaluation_images} images) of a logistic regression "
             f"on the frozen {result.backbone} features, against training images per class; "
             f"{len(result.points[0].accuracies)} random draws per size; {result.seconds:.1f} s. The predictions fit "
             "a power law and a power law with a floor to the sizes marked fitted; the interval spans both over a "
             "bootstrap of the draws and the test set's own noise.")
    md = [f"# How many images are enough: {result.data}", "", intro, "", "![curve](curve.png)", "",
          "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    md += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    write_text_atomic(files["md"], "\n".join(md) + "\n")
    e = html.escape
    page = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
            f"<title>smallvision curve of {e(os.path.basename(os.path.normpath(result.data)))}</title>",
            "<style>body{font-family:system-ui,sans-serif;max-width:900px;margin:2em auto;padding:0 1em;color:#222}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}"
            "img{max-width:100%}</style></head><body>",
            f"<h1>How many images are enough: {e(result.data)}</h1>", f"<p>{e(intro)}</p>",
            f'<img alt="accuracy against training images per class" src="data:image/png;base64,'
            f'{base64.b64encode(png).decode("ascii")}">',
            '<table id="curve"><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in rows[0]) + "</tr></thead><tbody>"]
    page += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows[1:]]
    page.append("</tbody></table></body></html>")
    write_text_atomic(files["html"], "\n".join(page))
