"""``augment``: the chapter's convnet with flip/rotation/zoom augmentation and Dropout(0.5)
(2nd ed.: 83.5 % test after 100 epochs)."""
from .base import ChapterConvnet, register


@register
class Augment(ChapterConvnet):
    name = "augment"
    summary = "the chapter's convnet with augmentation and dropout (RMSprop, 100 epochs)"
    default_epochs = 100
    chapter_figure = "83.5 %"

    def convnet_options(self, seed):
        from ..models.augment import chapter_augmentation
        return dict(augmentation=chapter_augmentation(seed), dropout=0.5)
