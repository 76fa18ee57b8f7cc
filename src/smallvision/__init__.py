"""smallvision: train, compare and explain image classifiers on small image sets with Keras 3."""

__version__ = "0.1.0"
