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
from .base import register


def build_model(image_size, num_classes, seed, learning_rate, options):
    """augmentation -> frozen base -> the chapter's head, compiled (finetune's first stage too)."""
    o = pretrained.options(options)
    base = pretrained.frozen_base(image_size, o)
    images = keras.Input(shape=tuple(image_size) + (3,), name="image")
    return pretrained.classifier(images, base(chapter_augmentation(seed)(images)), o, num_classes, learning_rate,
                                 name=f"features_augment_{o['backbone']}")


@register
class FeaturesAugment(pretrained.Pretrained):
    name = "features-augment"
    summary = "augmentation + frozen pretrained conv base + dense classifier, end to end (RMSprop, 50 epochs)"
    default_epochs = 50

    def build(self, image_size, num_classes, seed, learning_rate, options=None):
        return build_model(image_size, num_classes, seed, learning_rate, options)
