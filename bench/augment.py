"""Issue #28: what the chapter's augmentation costs in training, and where it should run.

For each backend (its own process): the chapter's convnet at 180x180 trained on the same images
without augmentation (``scratch``), with Keras' three layers in the model (``keras-layers``: the
chapter's placement, which turns JAX's compilation off), with smallvision's one batched layer
(``batched``: what `augment` trains with), and with the OpenCV views made in the feed on the
CPU (``feed``: a keras.utils.PyDataset with 2 worker threads; the model without augmentation).
One warm-up epoch each, then the paths' epochs alternate, ``--rounds`` times; medians of
images/s and each path's epoch time over scratch's.

    python bench/augment.py [--images 256] [--rounds 5] [--backends tensorflow,jax]

Written to bench/results/augment.json.
"""
import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _common import machine, median, record

PATHS = ("scratch", "keras-layers", "batched", "feed")


def one_backend(n, rounds):
    import keras
    import numpy as np

    from smallvision.data.augment import chapter_view
    from smallvision.models.augment import RandomChapterAugmentation, chapter_augmentation
    from smallvision.models.convnet import chapter_convnet
    from smallvision.models.heads import compile_classifier

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 180, 180, 3), dtype=np.uint8)
    y = np.arange(n) % 2

    class Feed(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=2, use_multiprocessing=False)
            self.epoch = 0

        def on_epoch_end(self):
            self.epoch += 1

        def __len__(self):
            return n // 32

        def __getitem__(self, i):
            batch = x[i * 32:(i + 1) * 32]
            return np.stack([chapter_view(im, np.random.default_rng([i, j, self.epoch])) for j, im in enumerate(batch)]), \
                y[i * 32:(i + 1) * 32]

    augmentation = {"scratch": lambda: None, "keras-layers": lambda: chapter_augmentation(0),
                    "batched": lambda: RandomChapterAugmentation(seed=0), "feed": lambda: None}
    models, jit = {}, {}
    for path in PATHS:
        keras.utils.set_random_seed(0)
        m = compile_classifier(chapter_convnet((180, 180), 2, augmentation=augmentation[path](), dropout=0.5), 2,
                               keras.optimizers.RMSprop(1e-3))
        models[path] = m
    def epoch(path):
        t = time.perf_counter()
        if path == "feed":
            models[path].fit(Feed(), epochs=1, verbose=0)
        else:
            models[path].fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
        return time.perf_counter() - t
    for path in PATHS:
        epoch(path)  # warm-up: compilation
        jit[path] = bool(models[path].jit_compile)
    times = {p: [] for p in PATHS}
    for _ in range(rounds):
        for path in PATHS:
            times[path].append(epoch(path))
    out = {"backend": keras.backend.backend(), "images": n, "rounds": rounds}
    for path in PATHS:
        out[path] = {"images_per_s": median([n / t for t in times[path]]), "epoch_s": median(times[path]),
                     "compiled_step": jit[path],
                     "epoch_vs_scratch": round(median(times[path]) / median(times["scratch"]), 3)}
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--backends", default="tensorflow,jax")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        return one_backend(a.images, a.rounds)
    result = {"machine": machine(), "backends": {}}
    for backend in a.backends.split(","):
        out = subprocess.run([sys.executable, __file__, "--one", "--images", str(a.images), "--rounds", str(a.rounds)],
                             capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": backend})
        if out.returncode != 0:
            sys.exit(f"{backend}: {out.stderr[-2000:]}")
        result["backends"][backend] = json.loads([l for l in out.stdout.splitlines() if l.startswith("{")][-1])
    record("augment", result)


if __name__ == "__main__":
    main()
