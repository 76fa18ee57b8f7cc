"""``features-augment``: the chapter's feature extraction, method 2 — the frozen pretrained
base inside the model, behind the augmentation layers, so every epoch sees new variants of
the images (2nd ed., VGG16: about 97.5 %, 50 epochs). Slower than ``features`` — every
epoch runs the base over every image — and overfits less.

Model: uint8 image -> RandomFlip/RandomRotation/RandomZoom -> the backbone's own
preprocessing -> frozen base (BatchNorm in inference mode) -> the chapter's head.
"""
import keras

from ..models.augment import chapter_augmentation
from . import pretrained

NAME = "features-augment"
SUMMARY = "augmentation + frozen pretrained conv base + dense classifier, end to end (RMSprop, 50 epochs)"
DEFAULT_EPOCHS = 50
DEFAULT_LEARNING_RATE = 1e-3
OPTIONS = ("backbone", "head", "weights")
default_image_size = pretrained.default_image_size
validate = pretrained.validate


def build(image_size, num_classes, seed, learning_rate, options=None):
    from . import compile_classifier
    o = pretrained.options(options)
    base = pretrained.frozen_base(image_size, o)
    images = keras.Input(shape=tuple(image_size) + (3,), name="image")
    x = base(chapter_augmentation(seed)(images))
    model = keras.Model(images, pretrained.head(x, o["head"], num_classes), name=f"features_augment_{o['backbone']}")
    return compile_classifier(model, num_classes, keras.optimizers.RMSprop(learning_rate))
