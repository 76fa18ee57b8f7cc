"""``features-augment``: the chapter's feature extraction, method 2 — the frozen pretrained
base behind the augmentation, so that every epoch sees new variants of the images (2nd ed.,
VGG16: about 97.5 %, 50 epochs); it overfits less than ``features``.

The chapter runs the frozen base again for every image in every epoch (50 x 2,000 forward
passes). The base is frozen and in inference mode, so the head only ever needs
base(augment(image)); here that is computed once for ``views`` augmented views of each training
image (through the CPU runtime, cached by image content, view, augmentation and backbone, and
shared by every seed, head and run), and each epoch draws one view per image. ``views="exact"``
draws a fresh view of every image in every epoch instead, as the chapter's model does (slower:
one frozen pass per image and epoch, through the fast runtime). Validation and test use the
images unaugmented, from the ``features`` cache.

The saved model is the chapter's: uint8 image -> RandomFlip/RandomRotation/RandomZoom (active in
training only) -> the backbone's own preprocessing -> frozen base -> the trained head.
"""
import keras

from ..labels import classes_of_units
from ..models.augment import chapter_augmentation
from . import features, pretrained
from .base import register

DEFAULT_VIEWS = 10  # measured: bench/RESULTS.md §7 (views 5, 10, 20 and exact, three seeds each)


def build_model(image_size, num_classes, seed, learning_rate, options):
    """augmentation -> frozen base -> the chapter's head, compiled (finetune's first stage too)."""
    o = pretrained.options(options)
    base = pretrained.frozen_base(image_size, o)
    images = keras.Input(shape=tuple(image_size) + (3,), name="image")
    return pretrained.classifier(images, base(chapter_augmentation(seed)(images)), o, num_classes, learning_rate,
                                 name=f"features_augment_{o['backbone']}")


def views(options):
    """The ``views`` option checked: a number of cached views (>= 1) or "exact"."""
    v = (options or {}).get("views", DEFAULT_VIEWS)
    if v == "exact":
        return v
    try:
        n = int(v)
    except (TypeError, ValueError):
        n = 0
    if n < 1 or str(v).strip() != str(n):
        raise ValueError(f"views must be a whole number >= 1 or 'exact'. Received: views={v!r}")
    return n


@register
class FeaturesAugment(pretrained.Pretrained):
    name = "features-augment"
    summary = "augmented views through the frozen pretrained base (cached), dense classifier (RMSprop, 50 epochs)"
    default_epochs = 50
    options = ("backbone", "head", "classifier", "weights", "views")

    def validate(self, opts, class_names):
        super().validate(opts, class_names)
        views(opts)

    def build(self, image_size, num_classes, seed, learning_rate, options=None):
        """The head alone, on the frozen network's output for an augmented view."""
        return features.head_model(image_size, num_classes, learning_rate, options)

    def inputs(self, prep, options, progress=True, seed=0):
        clean = features.cached_features(prep, options, progress)
        k = views(options)
        train = features.FreshViews(prep, options, seed) if k == "exact" else \
            features.ViewSet(features.cached_views(prep, options, k, progress), k, seed)
        return dict(clean, train=train)

    def export(self, head, image_size, options):
        """The chapter's end-to-end model (augmentation, frozen base, head) with the trained head."""
        model = build_model(image_size, classes_of_units(head.output_shape[-1]), 0, 1e-3, options)
        for layer in head.layers:
            if layer.weights:
                model.get_layer(layer.name).set_weights(layer.get_weights())
        return model
