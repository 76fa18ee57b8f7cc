"""``nopool``: the chapter's convnet without its MaxPooling2D layers — the cautionary variant.

Its last conv layer sees only 11x11 pixels and its dense layer has millions of weights;
``smallvision explain pooling --train DATA`` trains it beside ``scratch`` to show the cost.
"""
from .base import ChapterConvnet, register


@register
class NoPool(ChapterConvnet):
    name = "nopool"
    summary = "teaching variant: the chapter's convnet without max-pooling (see explain pooling)"
    default_epochs = 30

    def convnet_options(self, seed):
        return dict(pooling=False, name="chapter_convnet_no_pooling")
