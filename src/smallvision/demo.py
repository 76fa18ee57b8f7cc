"""``smallvision demo``: the main job, offline — write scikit-learn's digits as an image folder
(unless given one), train, evaluate, and classify a few test images."""
import csv
import os

from . import runner
from .inference import predict
from .progress import log


def demo(out="smallvision-demo", data=None, strategy="scratch", epochs=None, image_size=None, progress=True,
         verbose="auto"):
    """Train ``strategy`` on the digits stand-in (or ``data``) under ``out`` and predict a few
    test images. Returns the run."""
    from .data.demo import write_digits

    if data is None:
        data = write_digits(os.path.join(out, "digits"))
        if progress:
            log(f"demo data: scikit-learn's 8x8 handwritten digits written as an image folder at {data} "
                 "(a stand-in; run on your own folder with --data DIR)")
        epochs = 6 if epochs is None else epochs
        image_size = image_size or (80, 80)
    run = runner.train(data, strategy, out=os.path.join(out, "runs"), epochs=epochs,
                       image_size=image_size, progress=progress, verbose=verbose)
    test_files = [os.path.join(data, *r.split("/")) for r in _split_paths(run, "test")[:5]]
    for row in predict(run.path, test_files, progress=progress):
        log(f"predict {row['path']}: {row['class']} ({row['probability']:.3f})")
    return run


def _split_paths(run, split):
    with open(run.file("index.csv"), encoding="utf-8", errors="surrogateescape", newline="") as f:
        return [r["path"] for r in csv.DictReader(f) if r["split"] == split]
