"""``scratch``: the chapter's convnet trained from scratch, no augmentation (2nd ed.: 69.5 % test)."""
from .base import ChapterConvnet, register


@register
class Scratch(ChapterConvnet):
    name = "scratch"
    summary = "the chapter's convnet from scratch (RMSprop, 30 epochs)"
    default_epochs = 30
    chapter_figure = "69.5 %"
