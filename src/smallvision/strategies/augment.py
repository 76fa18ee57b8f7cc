"""``augment``: the chapter's convnet with flip/rotation/zoom augmentation and Dropout(0.5)
(2nd ed.: 83.5 % test after 100 epochs).

It trains with the augmentation as one batched, compilable layer
(:class:`~smallvision.models.augment.RandomChapterAugmentation`: one affine matrix per image, one
resampling) and publishes the chapter's model, with Keras' three augmentation layers, carrying
the trained weights (:meth:`Augment.image_model`): model.keras stays a plain Keras model.
"""
from .base import ChapterConvnet, register


@register
class Augment(ChapterConvnet):
    name = "augment"
    summary = "the chapter's convnet with augmentation and dropout (RMSprop, 100 epochs)"
    default_epochs = 100
    chapter_figure = "83.5 %"

    def convnet_options(self, seed):
        from ..models.augment import RandomChapterAugmentation
        return dict(augmentation=RandomChapterAugmentation(seed=_seed(seed), name="data_augmentation"), dropout=0.5)

    def image_model(self, model, spec, stage):
        """The chapter's model (RandomFlip, RandomRotation, RandomZoom) with ``model``'s weights."""
        from ..labels import classes_of_units
        from ..models.augment import chapter_augmentation
        from ..models.convnet import chapter_convnet
        from ..models.walk import copy_weights
        return copy_weights(model, chapter_convnet(tuple(spec.image_size), classes_of_units(model.output_shape[-1]),
                                                   augmentation=chapter_augmentation(spec.seed), dropout=0.5))


def _seed(seed):
    return None if seed is None else int(seed) * 7919 + 4
