"""The offline stand-in data set: scikit-learn's bundled handwritten digits as an image folder.

1,797 greyscale 8×8 digits (0–9), written as PNG files, one sub-folder per class. It ships
inside scikit-learn, so the demo runs on a fresh machine with no network. It is a stand-in
for a real photo folder, not a benchmark: the chapter's data set is dogs vs cats.
"""
import os

import numpy as np
from PIL import Image


def write_digits(folder):
    """Write the digits under ``folder/<digit>/digit-<n>.png`` (skipped if already complete).

    Returns the folder.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    marker = os.path.join(folder, ".complete")
    if os.path.exists(marker):
        return folder
    for n, (pixels, target) in enumerate(zip(digits.images, digits.target)):
        d = os.path.join(folder, str(int(target)))
        os.makedirs(d, exist_ok=True)
        img = np.clip(np.round(pixels * 255.0 / 16.0), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(os.path.join(d, f"digit-{n:04d}.png"))
    with open(marker, "w") as f:
        f.write("written by smallvision: scikit-learn's load_digits() as class folders\n")
    return folder
