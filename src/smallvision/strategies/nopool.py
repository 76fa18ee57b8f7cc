"""``nopool``: the chapter's convnet without its MaxPooling2D layers — the cautionary variant.

Its last conv layer sees only 11x11 pixels and its dense layer has millions of weights;
``smallvision explain pooling --train DATA`` trains it beside ``scratch`` to show the cost.
"""
import keras

from ..models.convnet import chapter_convnet
from ..models.heads import compile_classifier
from .base import Strategy, register


@register
class NoPool(Strategy):
    name = "nopool"
    summary = "teaching variant: the chapter's convnet without max-pooling (see explain pooling)"
    default_epochs = 30

    def build(self, image_size, num_classes, seed, learning_rate, options=None):
        model = chapter_convnet(image_size, num_classes, pooling=False, name="chapter_convnet_no_pooling")
        return compile_classifier(model, num_classes, keras.optimizers.RMSprop(learning_rate))
