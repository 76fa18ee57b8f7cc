"""``scratch``: the chapter's convnet trained from scratch, no augmentation (2nd ed.: 69.5 % test)."""
import keras

from ..models.convnet import chapter_convnet
from ..models.heads import compile_classifier
from .base import Strategy, register


@register
class Scratch(Strategy):
    name = "scratch"
    summary = "the chapter's convnet from scratch (RMSprop, 30 epochs)"
    default_epochs = 30

    def build(self, image_size, num_classes, seed, learning_rate, options=None):
        model = chapter_convnet(image_size, num_classes)
        return compile_classifier(model, num_classes, keras.optimizers.RMSprop(learning_rate))
