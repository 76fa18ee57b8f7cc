"""The chapter's convnet (Deep Learning with Python, 2nd ed., chapter 8), built exactly.

    Rescaling(1/255)
    Conv2D(32, 3, relu)  MaxPooling2D(2)
    Conv2D(64, 3, relu)  MaxPooling2D(2)
    Conv2D(128, 3, relu) MaxPooling2D(2)
    Conv2D(256, 3, relu) MaxPooling2D(2)
    Conv2D(256, 3, relu)
    Flatten  [Dropout(0.5)]  Dense(1, sigmoid) | Dense(N, softmax)

At 180×180 with two classes: 991,041 parameters.
"""
import keras
from keras import layers

from .heads import classifier_output

FILTERS = (32, 64, 128, 256, 256)


def min_input_size(pooling=True):
    """Smallest square input for which the last conv layer still has an output pixel."""
    size = 3  # the last 3x3 valid conv needs 3 pixels
    if pooling:
        for _ in FILTERS[:-1]:
            size = size * 2 + 2  # undo MaxPooling2D(2), then a 3x3 valid conv
    else:
        size += 2 * (len(FILTERS) - 1)
    return size


def chapter_convnet(image_size=(180, 180), num_classes=2, augmentation=None, dropout=0.0,
                    pooling=True, name="chapter_convnet"):
    """Build (not compile) the chapter's convnet.

    Args:
        image_size: ``(height, width)`` of the uint8 RGB input.
        num_classes: number of classes (>= 2).
        augmentation: optional layer/Sequential applied first (training only).
        dropout: rate of the Dropout before the classifier (0 leaves it out).
        pooling: ``False`` builds the same net without its MaxPooling2D layers (the
            chapter's cautionary variant).

    Returns:
        A ``keras.Model``.
    """
    h, w = image_size
    need = min_input_size(pooling)
    if h < need or w < need:
        raise ValueError(f"the chapter's convnet needs images of at least {need}x{need} pixels. "
                         f"Received: image_size={image_size}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2. Received: num_classes={num_classes}")
    inputs = keras.Input(shape=(h, w, 3), name="image")
    x = inputs
    if augmentation is not None:
        x = augmentation(x)
    x = layers.Rescaling(1.0 / 255, name="rescaling")(x)
    for i, filters in enumerate(FILTERS):
        x = layers.Conv2D(filters, 3, activation="relu", name=f"conv{i + 1}")(x)
        if pooling and i < len(FILTERS) - 1:
            x = layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    return keras.Model(inputs, classifier_output(x, num_classes), name=name)
