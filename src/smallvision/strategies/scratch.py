"""``scratch``: the chapter's convnet trained from scratch, no augmentation (2nd ed.: 69.5 % test)."""
import keras

from ..models.convnet import chapter_convnet

NAME = "scratch"
SUMMARY = "the chapter's convnet from scratch (RMSprop, 30 epochs)"
DEFAULT_EPOCHS = 30
DEFAULT_LEARNING_RATE = 1e-3


def build(image_size, num_classes, seed, learning_rate, options=None):
    from . import compile_classifier
    model = chapter_convnet(image_size, num_classes)
    return compile_classifier(model, num_classes, keras.optimizers.RMSprop(learning_rate))
