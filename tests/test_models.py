"""The chapter's models."""
import keras
import pytest

from smallvision import strategies
from smallvision.errors import SmallvisionError
from smallvision.models.convnet import chapter_convnet, min_input_size


def test_scratch_has_the_chapters_991041_parameters():
    model = strategies.get("scratch").build((180, 180), 2, 0, 1e-3)
    assert model.count_params() == 991_041
    assert [type(l).__name__ for l in model.layers[1:3]] == ["Rescaling", "Conv2D"]
    assert model.loss == "binary_crossentropy"
    assert isinstance(model.optimizer, keras.optimizers.RMSprop)


def test_augment_adds_augmentation_and_dropout_not_parameters():
    model = strategies.get("augment").build((180, 180), 2, 0, 1e-3)
    assert model.count_params() == 991_041
    aug = model.get_layer("data_augmentation")
    assert [type(l).__name__ for l in aug.layers] == ["RandomFlip", "RandomRotation", "RandomZoom"]
    assert model.get_layer("dropout").rate == 0.5


def test_many_classes_use_softmax_and_sparse_loss():
    model = strategies.get("scratch").build((180, 180), 5, 0, 1e-3)
    assert model.output_shape == (None, 5)
    assert model.loss == "sparse_categorical_crossentropy"


def test_too_small_images_are_refused_with_the_minimum():
    assert min_input_size() == 78
    chapter_convnet((78, 78))
    with pytest.raises(ValueError, match="at least 78x78.*Received: image_size=\\(60, 60\\)"):
        chapter_convnet((60, 60))


def test_no_pooling_variant_explodes_the_dense_layer():
    # 170x170x256 features reach the dense layer instead of 7x7x256
    assert chapter_convnet((180, 180), pooling=False).count_params() == 978_496 + 170 * 170 * 256 + 1


def test_unknown_strategy():
    with pytest.raises(SmallvisionError, match="expected one of: scratch, augment, features, features-augment, finetune, nopool"):
        strategies.get("transformer")
