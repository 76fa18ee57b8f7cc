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
from ..labels import classes_of_units
from . import features, pretrained
from .base import register
from .options import ViewsOptions


def build_model(image_size, num_classes, seed, learning_rate, o):
    """augmentation -> frozen base -> the chapter's head, compiled (finetune's first stage too)."""
    import keras

    from ..models.augment import chapter_augmentation
    base = pretrained.frozen_base(image_size, o)
    images = keras.Input(shape=tuple(image_size) + (3,), name="image")
    return pretrained.classifier(images, base(chapter_augmentation(seed)(images)), o, num_classes, learning_rate,
                                 name=f"features_augment_{o.backbone}")


def view_inputs(prep, o, progress=True, seed=0):
    """{split: inputs}: the cached augmented views for training (or fresh ones: ``views="exact"``),
    the unaugmented features for validation and test."""
    clean = features.cached_features(prep, o, progress)
    train = features.FreshViews(prep, o, seed) if o.views == "exact" else \
        features.ViewSet(features.cached_views(prep, o, o.views, progress), o.views, seed)
    return dict(clean, train=train)


def end_to_end(head, image_size, o):
    """The chapter's end-to-end model (augmentation, frozen base, head) with the weights of the
    trained ``head`` (a model on the cached features)."""
    from ..models.walk import copy_weights
    return copy_weights(head, build_model(image_size, classes_of_units(head.output_shape[-1]), 0, 1e-3, o))


@register
class FeaturesAugment(pretrained.Pretrained):
    name = "features-augment"
    summary = "augmented views through the frozen pretrained base (cached), dense classifier (RMSprop, 50 epochs)"
    default_epochs = 50
    chapter_figure = "97.5 %"
    Options = ViewsOptions

    def build(self, image_size, num_classes, seed, learning_rate, options):
        """The head alone, on the frozen network's output for an augmented view."""
        return features.head_model(image_size, num_classes, learning_rate, options)

    def inputs(self, prep, options, progress=True, seed=0):
        return view_inputs(prep, options, progress, seed)

    def image_model(self, head, spec, stage):
        """The chapter's end-to-end model (augmentation, frozen base, head) with the trained head."""
        return end_to_end(head, spec.image_size, spec.options)
