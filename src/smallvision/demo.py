"""``smallvision demo``: the main job, offline, in a few minutes — the chapter's point on a
stand-in: a convnet trained from scratch beside a pretrained conv base's features, on the
same images, compared in the ladder's report; then test images classified: one of each class
and the best run's worst mistake, so that the last lines say something.

The stand-in is scikit-learn's digits written as an image folder (no network needed); with
``data`` the same runs on your own folder."""
import os

from .inference import predict
from .ladder import ladder
from .progress import log
from .runs import Run

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
    folder = ladder(data, out=os.path.join(out, "ladder"), strategies=list(strategies),
                    epochs_scale=epochs_scale or 1.0, image_size=image_size, progress=progress, verbose=verbose)
    best = collect(folder)["best"]  # the best validation accuracy of the ladder
    run = Run(best["path"])
    shown = showcase(run.read_predictions(), run.config.class_names)
    truth = {os.path.join(data, *r["path"].split("/")): r["true"] for r in shown}
    for row in predict(best["path"], list(truth), progress=progress):
        true = truth.get(row["path"])
        log(f"predict ({best['name']}) {row['path']}: {row['class']} ({row['probability']:.3f})"
            + ("" if true in (None, row["class"]) else f"  <- a mistake: it is {true}"))
    return folder


def showcase(predictions, class_names):
    """Test rows to show a newcomer: the first of each class (in the order of ``class_names``),
    then the test image the model gets most wrong (highest loss), if it gets one wrong."""
    test = [r for r in predictions if r["split"] == "test"]
    first = {}
    for r in test:
        first.setdefault(r["true"], r)
    shown = [first[c] for c in class_names if c in first]
    wrong = [r for r in test if r["predicted"] != r["true"]]
    if wrong:
        worst = max(wrong, key=lambda r: r["loss"])
        shown = [r for r in shown if r is not worst] + [worst]
    return shown
