"""Classes and model outputs, decided once: two classes are one sigmoid unit (the chapter's
``Dense(1, activation="sigmoid")`` with binary cross-entropy and float labels of shape [n, 1]);
more are a softmax over N units (sparse categorical cross-entropy, integer labels).
Everything that builds, compiles, feeds, reads or explains a classifier asks here
(:mod:`.models.heads` builds the layer; this module needs only NumPy)."""
import numpy as np


def output_units(num_classes):
    """Units of the last Dense layer: 1 for two classes, N for more."""
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes. Received: num_classes={num_classes}")
    return 1 if num_classes == 2 else int(num_classes)


def classes_of_units(units):
    """The number of classes of a classifier with ``units`` output units (1 sigmoid unit: 2)."""
    return 2 if units == 1 else int(units)


def is_binary(num_classes):
    """True when the model has one sigmoid unit (two classes)."""
    return output_units(num_classes) == 1


def classes_of(units):
    """How many classes a model with ``units`` output units tells apart."""
    return 2 if units == 1 else int(units)


def loss_for(num_classes):
    return "binary_crossentropy" if is_binary(num_classes) else "sparse_categorical_crossentropy"


def as_targets(labels, num_classes):
    """Integer class labels -> what the loss expects: float [n, 1] for a sigmoid, int32 [n] otherwise."""
    labels = np.asarray(labels)
    return labels.astype(np.float32)[:, None] if is_binary(num_classes) else labels.astype(np.int32)


def as_probabilities(outputs, num_classes):
    """Model outputs -> ``[n, num_classes]`` probabilities (a sigmoid output p becomes [1-p, p])."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if is_binary(num_classes) and outputs.ndim == 2 and outputs.shape[1] == 1:
        p = outputs[:, 0]
        return np.stack([1 - p, p], axis=1)
    return outputs


def class_score(outputs, k, num_classes):
    """The output that speaks for class ``k`` (any backend's tensor): p for class 1 of a sigmoid,
    1 - p for class 0, the k-th softmax unit otherwise. Grad-CAM differentiates this."""
    if is_binary(num_classes):
        return outputs[:, 0] if k == 1 else 1.0 - outputs[:, 0]
    return outputs[:, k]


def generic_names(units):
    """Class names for a bare model file that carries none: class_0, class_1, ..."""
    return [f"class_{i}" for i in range(classes_of(units))]
