"""``augment``: the chapter's convnet with flip/rotation/zoom augmentation and Dropout(0.5)
(2nd ed.: 83.5 % test after 100 epochs)."""
import keras

from ..models.augment import chapter_augmentation
from ..models.convnet import chapter_convnet
from ..models.heads import compile_classifier
from .base import Strategy, register


@register
class Augment(Strategy):
    name = "augment"
    summary = "the chapter's convnet with augmentation and dropout (RMSprop, 100 epochs)"
    default_epochs = 100

    def build(self, image_size, num_classes, seed, learning_rate, options=None):
        model = chapter_convnet(image_size, num_classes, augmentation=chapter_augmentation(seed), dropout=0.5)
        return compile_classifier(model, num_classes, keras.optimizers.RMSprop(learning_rate))
