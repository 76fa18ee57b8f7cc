"""The classifier's last layer and its compilation (the two-class rule itself: :mod:`..labels`)."""
from ..labels import is_binary, loss_for, output_units


def classifier_output(x, num_classes, name="predictions", kernel_regularizer=None):
    """Dense(1, sigmoid) for two classes, Dense(N, softmax) for more; float32 under any dtype
    policy (under mixed precision the probabilities and the loss stay float32, as Keras' guide
    asks: :mod:`smallvision.mixed`)."""
    from keras import layers
    activation = "sigmoid" if is_binary(num_classes) else "softmax"
    return layers.Dense(output_units(num_classes), activation=activation, name=name,
                        kernel_regularizer=kernel_regularizer, dtype="float32")(x)


def compile_classifier(model, num_classes, optimizer, steps_per_execution=1):
    """The chapter's loss and metric for the number of classes. ``steps_per_execution``: batches
    per compiled call (a head on cached features spends most of a step in per-call overhead); 1 on
    the PyTorch backend, which runs one batch per call and refuses more."""
    import keras
    if keras.backend.backend() == "torch":
        steps_per_execution = 1
    model.compile(optimizer=optimizer, loss=loss_for(num_classes), metrics=["accuracy"],
                  steps_per_execution=steps_per_execution)
    return model
