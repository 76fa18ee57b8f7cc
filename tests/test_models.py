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
    """It trains with one batched augmentation layer and publishes the chapter's model (Keras'
    three layers) with the trained weights: the same function outside training."""
    import numpy as np

    from smallvision.models.augment import RandomChapterAugmentation
    s = strategies.get("augment")
    model = s.build((180, 180), 2, 0, 1e-3)
    assert model.count_params() == 991_041
    assert isinstance(model.get_layer("data_augmentation"), RandomChapterAugmentation)
    assert model.get_layer("dropout").rate == 0.5
    spec = strategies.TrainSpec.parse("augment", image_size=(180, 180))
    published = s.image_model(model, spec, "train")
    aug = published.get_layer("data_augmentation")
    assert [type(l).__name__ for l in aug.layers] == ["RandomFlip", "RandomRotation", "RandomZoom"]
    assert published.count_params() == 991_041
    x = np.random.default_rng(0).integers(0, 256, (4, 180, 180, 3)).astype("float32")
    np.testing.assert_allclose(published.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-6, atol=1e-7)


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


def test_every_strategy_keeps_the_contract():
    """One base states the defaults; each registered strategy is one instance of a subclass."""
    from smallvision.strategies import TrainSpec
    from smallvision.strategies.base import Strategy
    from smallvision.strategies.options import Options
    assert strategies.names() == ["scratch", "augment", "features", "features-augment", "finetune", "nopool"]
    for name in strategies.names():
        s = strategies.get(name)
        assert isinstance(s, Strategy) and s.name == name and s.summary and s.default_epochs > 0
        assert issubclass(s.Options, Options) and s.Options.__dataclass_params__.frozen
        spec = TrainSpec.parse(name, epochs=3, image_size=80)
        assert isinstance(spec.options, s.Options)
        assert sum(stage.epochs for stage in s.stages(spec, 2)) >= 3
        assert len({stage.name for stage in s.stages(spec, 2)}) == len(s.stages(spec, 2))  # stages told by name
        assert s.read_options(spec.options.to_json()) == spec.options  # the JSON edge round-trips
    plain = strategies.get("scratch")
    assert plain.default_image_size(plain.parse_options()) == (180, 180) and plain.backbone(Options()) is None
    features = strategies.get("features")
    assert features.default_image_size(features.parse_options()) == (224, 224)
    assert features.backbone(features.parse_options()) == "efficientnet_lite0"
    assert [strategies.get(n).chapter_figure for n in strategies.LADDER] == ["69.5 %", "83.5 %", "≈97 %", "97.5 %",
                                                                               "98.5 %"]


def test_the_two_class_rule_in_one_place():
    import numpy as np

    from smallvision import labels
    assert labels.output_units(2) == 1 and labels.output_units(5) == 5 and labels.classes_of(1) == 2
    assert labels.as_targets([0, 1], 2).shape == (2, 1) and labels.as_targets([0, 3], 4).dtype == np.int32
    np.testing.assert_allclose(labels.as_probabilities([[0.25]], 2), [[0.75, 0.25]])
    out = np.array([[0.25]])
    assert labels.class_score(out, 0, 2)[0] == 0.75 and labels.class_score(out, 1, 2)[0] == 0.25
    assert labels.generic_names(1) == ["class_0", "class_1"]
    with pytest.raises(ValueError, match="at least 2 classes"):
        labels.output_units(1)


def test_a_model_cut_anywhere_computes_what_the_whole_does():
    """models.walk.split inlines nested models (a pretrained base inside a classifier)."""
    import numpy as np

    from smallvision.models.walk import conv_layers, split
    from smallvision.strategies.features_augment import build_model
    from smallvision.strategies import get
    model = build_model((64, 64), 2, 0, 1e-3, get("features-augment").read_options({}).replace(weights=None))
    x = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)).astype("float32")
    whole = np.asarray(model(x, training=False))
    base = model.get_layer("efficientnet_lite0")
    for layer in (conv_layers(model)[-1], base.get_layer("block1_project_bn"), base.get_layer("stem_conv")):
        body, head = split(model, layer)
        np.testing.assert_allclose(np.asarray(head(body(x, training=False), training=False)), whole, atol=1e-4)
    with pytest.raises(ValueError, match="skip connection around the cut"):  # block2_add reads block1_project_bn
        split(model, base.get_layer("block2_project_bn"))
