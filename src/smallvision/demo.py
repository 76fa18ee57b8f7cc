"""``smallvision demo``: the main job, offline, in a few minutes — the chapter's point on a
stand-in: a convnet trained from scratch beside a pretrained conv base's features, on the
same images, compared in the ladder's report; then a few test images classified.

The stand-in is scikit-learn's digits written as an image folder (no network needed); with
``data`` the same runs on your own folder."""
import csv
import os

from .inference import predict
from .ladder import run_ladder
from .progress import log

DEMO_STRATEGIES = ("scratch", "features")


def demo(out="smallvision-demo", data=None, strategies=DEMO_STRATEGIES, epochs_scale=None, image_size=None,
         progress=True, verbose=0):
    """A small ladder (default: ``scratch`` beside ``features``) on the digits stand-in (or
    ``data``) under ``out``, its report, and a few test images classified by the best run.

    Args:
        strategies: the strategies to compare.
        epochs_scale: multiplies the strategies' epochs (digits default 0.2: scratch 6, features 4;
            your own folder: 1, the chapter's).
        image_size: one size for every strategy (digits default 80; your folder: the backbone's).

    Returns:
        The ladder folder (its report.html and report.md say which strategy won).
    """
    from .data.demo import write_digits
    from .report.collect import collect

    if data is None:
        data = write_digits(os.path.join(out, "digits"))
        if progress:
            log(f"demo data: scikit-learn's 8x8 handwritten digits written as an image folder at {data} "
                "(a stand-in; run on your own folder with --data DIR)")
        epochs_scale = 0.2 if epochs_scale is None else epochs_scale
        image_size = image_size or (80, 80)
    folder = run_ladder(data, out=os.path.join(out, "ladder"), strategies=list(strategies),
                        epochs_scale=epochs_scale or 1.0, image_size=image_size, progress=progress, verbose=verbose)
    best = collect(folder)["best"]  # the best validation accuracy of the ladder
    test_files = [os.path.join(data, *p.split("/")) for p in _split_paths(best["path"], "test")[:5]]
    for row in predict(best["path"], test_files, progress=progress):
        log(f"predict ({best['name']}) {row['path']}: {row['class']} ({row['probability']:.3f})")
    return folder


def _split_paths(run_path, split):
    with open(os.path.join(run_path, "index.csv"), encoding="utf-8", errors="surrogateescape", newline="") as f:
        return [r["path"] for r in csv.DictReader(f) if r["split"] == split]
