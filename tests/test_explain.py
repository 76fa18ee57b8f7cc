"""explain: the NumPy reference against Keras, the slide's example, and every command's output."""
import os

import keras
import numpy as np
import pytest
from PIL import Image

from smallvision import api, cli
from smallvision.explain import verbs
from smallvision.explain import conv as ref
from smallvision.explain.anatomy import layer_table
from smallvision.explain.maps import GAP, LABEL_WIDTH, _value_and_gradient


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("stride, dilation", [(1, 1), (2, 1), (3, 1), (1, 2)])
@pytest.mark.parametrize("kernel_size", [3, 4])
def test_conv2d_matches_keras(padding, stride, dilation, kernel_size):
    rng = np.random.default_rng(kernel_size * 10 + stride)
    x = rng.normal(size=(1, 11, 13, 3)).astype("float32")
    layer = keras.layers.Conv2D(5, kernel_size, strides=stride, padding=padding, dilation_rate=dilation)
    expected = keras.ops.convert_to_numpy(layer(x))[0]
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in layer.weights)
    bias = rng.normal(size=bias.shape).astype("float32")
    layer.set_weights([kernel, bias])
    expected = keras.ops.convert_to_numpy(layer(x))[0]
    ours = ref.conv2d(x[0], kernel, bias, stride=stride, padding=padding, dilation=dilation)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=1e-5)


@pytest.mark.parametrize("mode, layer_cls", [("max", keras.layers.MaxPooling2D),
                                             ("average", keras.layers.AveragePooling2D)])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("size, stride", [(2, None), (3, 2), (2, 1)])
def test_pooling_matches_keras(mode, layer_cls, padding, size, stride):
    x = np.random.default_rng(1).normal(size=(1, 9, 7, 4)).astype("float32")
    expected = keras.ops.convert_to_numpy(layer_cls(size, strides=stride, padding=padding)(x))[0]
    ours = ref.pool2d(x[0], size, stride, padding, mode)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_the_slides_worked_example_gives_minus_8():
    assert ref.SLIDE_KERNEL[1, 1] == -4 and ref.SLIDE_SOURCE[1, 1] == 2
    total, text = ref.worked_example()
    assert total == -8 and text.endswith("= -8") and "(2 x -4)" in text
    worked = api.explain_conv()
    assert "= -8" in worked.text and worked.total == -8 


@pytest.mark.parametrize("n, k, s, padding, expected", [(180, 3, 1, "valid", 178), (5, 3, 1, "same", 5),
                                                          (7, 3, 2, "valid", 3), (7, 3, 2, "same", 4)])
def test_output_size_formula(n, k, s, padding, expected):
    assert ref.output_size(n, k, s, padding) == expected
    assert ref.size_formula(n, k, s, padding).endswith(f"= {expected}")


def test_explain_conv_writes_side_by_side_and_prints_the_formula(tmp_path):
    img = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 41, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "conv.png"
    facts = api.explain_conv(str(img), "sobel-x", "valid", 2, str(out))
    text = facts.text
    assert facts.out == str(out) and facts.output.shape == (14, 20)
    # rows: floor((30 - 2 - 1)/2) + 1 = 14; columns: floor((41 - 2 - 1)/2) + 1 = 20
    assert "output 14x20" in text and "floor((30 - 1*(3-1) - 1) / 2) + 1 = 14" in text
    assert Image.open(out).size == (41 + GAP + 20, 30)
    kernel_file = tmp_path / "k.txt"
    kernel_file.write_text("# a 1x2 kernel\n1, -1\n")
    text = api.explain_conv(str(img), str(kernel_file), "same", 1, str(out)).text
    assert "output 30x41" in text and Image.open(out).size == (41 + GAP + 41, 30)


def test_explain_model_receptive_fields_of_the_chapters_convnet():
    facts = api.explain_model("scratch", (180, 180))
    text, rows = facts.text, facts.rows
    fields = {r.name: r.receptive_field for r in rows}
    assert [fields[f"conv{i}"] for i in range(1, 6)] == [3, 8, 18, 38, 78]
    assert [fields[f"pool{i}"] for i in range(1, 5)] == [4, 10, 22, 46]
    assert fields["flatten"] == "whole image"
    assert "991,041 parameters" in text and "conv5 sees 78x78" in text


def test_explain_model_expands_nested_augmentation():
    from smallvision.models.augment import chapter_augmentation
    from smallvision.models.convnet import chapter_convnet
    rows = layer_table(chapter_convnet((96, 96), augmentation=chapter_augmentation(0)))
    assert [r.name.rsplit("_", 1)[0] if r.name[-1].isdigit() else r.name for r in rows if r.depth == 1] == \
        ["random_flip", "random_rotation", "random_zoom"]


def test_explain_pooling_numbers():
    facts = api.explain_pooling((180, 180))
    text, a, b = facts.text, facts.pooled, facts.unpooled
    assert a.params == 991_041 and b.params == 8_376_897
    assert a.dense_params == 12_545 and b.dense_params == 7_398_401
    assert a.receptive_field == 78 and b.receptive_field == 11
    assert "8,376,897" in text and "78x78" in text and "11x11" in text


@pytest.mark.slow  # default tier under 5 minutes: CI's extended tier runs it
def test_explain_pooling_trains_both(tiny_data, tmp_path):
    facts = api.explain_pooling((80, 80), train_data=tiny_data, epochs=1, out=tmp_path / "runs", progress=False)
    assert "after 1 epochs" in facts.text
    for net in (facts.pooled, facts.unpooled):
        assert 0 <= net.validation_accuracy <= 1 and os.path.isdir(net.run)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    from conftest import make_folder
    root = tmp_path_factory.mktemp("explain")
    data = make_folder(root / "data", per_class=10, size=120)
    run = api.train(data, "augment", out=root / "runs", epochs=1, image_size=100, verbose=0, progress=False)
    return run, sorted((data / "discs").iterdir())[0]


def test_explain_activations_grid(small_run, tmp_path):
    run, image = small_run
    out = tmp_path / "act.png"
    text = api.explain_activations(run.path, image, str(out), per_layer=8).text
    assert Image.open(out).size == (LABEL_WIDTH + 8 * (64 + GAP), 5 * (64 + GAP))
    lines = text.splitlines()
    assert lines[0] == "showing all 5 conv layers"
    assert lines[2].startswith("conv1") and "98x98x32" in lines[2] and "2x2x256" in lines[6]


def test_explain_heatmap(small_run, tmp_path):
    run, image = small_run
    out = tmp_path / "heat.png"
    text = api.explain_heatmap(run.path, image, str(out), class_name="bars").text
    assert Image.open(out).size == (2 * (2 * 100 + GAP), 2 * 100)
    assert "heatmap for bars" in text and "2x2 grid" in text
    with pytest.raises(Exception, match="class-name must be one of bars, discs"):
        api.explain_heatmap(run.path, image, str(out), class_name="zebras")


def test_gradients_on_the_installed_backend():
    x = np.array([[1.0, -2.0, 3.0]], dtype="float32")
    value, grad = _value_and_gradient(lambda t: keras.ops.sum(t * t, axis=1), x)
    np.testing.assert_allclose(grad, 2 * x, rtol=1e-6)
    assert float(np.sum(value)) == pytest.approx(14.0)


@pytest.mark.parametrize("what", ["conv", "model", "pooling", "activations", "heatmap"])
def test_explain_help(what, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["explain", what, "--help"])
    assert e.value.code == 0 and "examples:" in capsys.readouterr().out


def test_a_pickled_kernel_file_is_refused_unread(tmp_path):
    """A .npy of Python objects would unpickle: np.load runs with allow_pickle=False."""
    import os

    from smallvision.errors import SmallvisionError
    from smallvision.explain.conv import load_kernel

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    arr = np.empty(1, dtype=object)
    arr[0] = Evil()
    with open(tmp_path / "k.npy", "wb") as f:
        np.lib.format.write_array(f, arr, allow_pickle=True)
    assert b"system" in (tmp_path / "k.npy").read_bytes()  # the payload is a pickle inside the .npy
    with pytest.raises(SmallvisionError, match="k.npy"):
        load_kernel(str(tmp_path / "k.npy"))
    assert not (tmp_path / "pwned").exists()


SPREAD = 0.02  # std of a heatmap scaled to [0, 1]: a flat map (all 0 or all 1) has 0; measured 0.04-0.4 (0.04: 3 epochs of scratch on 48 photos)


def _correct_test_photo(run, data):
    rows = [r for r in run.read_predictions() if r["split"] == "test" and r["true"] == r["predicted"]]
    assert rows, "the short run classified no test photo correctly"
    best = max(rows, key=lambda r: r["probability"])
    return data / best["path"]


def _check_explained(run_or_model, photo, tmp_path, grid, size):
    from smallvision.explain.verbs import activations, heatmap, text
    h = heatmap(run_or_model, photo, out=str(tmp_path / "heat.png"))
    assert h.cam.shape == (grid, grid) and 0 <= h.cam.min() and h.cam.max() <= 1
    assert h.cam.std() > SPREAD, f"flat heatmap on {h.layer}: std {h.cam.std():.3f}"
    print(f"{h.layer}: {h.cam.shape} std {h.cam.std():.3f} range {h.cam.min():.2f}..{h.cam.max():.2f}")
    assert Image.open(tmp_path / "heat.png").size == h.picture_size == (2 * (2 * size + GAP), 2 * size)
    assert f"Grad-CAM on {h.layer}" in text(h)
    a = activations(run_or_model, photo, out=str(tmp_path / "act.png"), per_layer=4)
    assert Image.open(tmp_path / "act.png").size == a.picture_size
    assert a.picture_size == (LABEL_WIDTH + 4 * (64 + GAP), len(a.maps) * (64 + GAP))
    return h, a


@pytest.mark.slow
@pytest.mark.realdata
def test_explain_pictures_on_every_strategys_run(shared_subset, tmp_path):
    """Short runs on real photos: scratch, features, features-augment and finetune from it."""
    train = lambda strategy, **kw: api.train(shared_subset, strategy, out=tmp_path / "runs", verbose=0,
                                             progress=False, **kw)
    scratch = train("scratch", epochs=3, image_size=150)
    h, a = _check_explained(scratch.path, _correct_test_photo(scratch, shared_subset), tmp_path, 5, 150)
    assert h.layer == "conv5" and list(a.maps) == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    features = train("features", epochs=5, image_size=128)
    h, a = _check_explained(features.path, _correct_test_photo(features, shared_subset), tmp_path, 4, 128)
    assert h.layer == "efficientnet_lite0/top_conv"
    assert len(a.maps) == 5 and "each of 5 resolutions (of 49 conv layers" in a.which
    fa = train("features-augment", epochs=1, image_size=128)
    _check_explained(fa.path, _correct_test_photo(fa, shared_subset), tmp_path, 4, 128)
    ft = train("finetune", epochs=1, start=fa.path)
    _check_explained(ft.model_path, _correct_test_photo(ft, shared_subset), tmp_path, 4, 128)


def test_heatmap_inside_a_keras_applications_base_nested_in_a_saved_classifier(tmp_path):
    """VGG16 from keras.applications, inside our wrapper, inside a classifier saved as .keras."""
    from smallvision.backbones.registry import create
    base = create("vgg16", (64, 64), weights=None)
    x = keras.Input((64, 64, 3), name="image")
    y = keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(base(x)))
    keras.Model(x, y).save(tmp_path / "vgg.keras")
    photo = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(photo)
    text = api.explain_heatmap(str(tmp_path / "vgg.keras"), photo, str(tmp_path / "h.png")).text
    assert "Grad-CAM on vgg16/vgg16/block5_conv3 (4x4 grid)" in text
    text = api.explain_activations(str(tmp_path / "vgg.keras"), photo, str(tmp_path / "a.png")).text
    assert "block1_conv2" in text and "block5_conv3" in text and "of 14 conv layers" in text


def test_a_model_without_convolutions_is_a_one_line_error(tmp_path, capsys):
    x = keras.Input((16, 16, 3))
    keras.Model(x, keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(x))).save(tmp_path / "d.keras")
    photo = tmp_path / "p.png"
    Image.new("RGB", (16, 16)).save(photo)
    for verb in ("heatmap", "activations"):
        assert cli.main(["explain", verb, str(tmp_path / "d.keras"), str(photo), "--out", str(tmp_path / "o.png")]) == 2
        err = capsys.readouterr().err
        assert "the model has no convolution layer" in err and err.count("\n") == 1


def test_an_image_argument_that_is_a_pipe_is_refused_at_once(small_run, tmp_path, capsys):
    import os
    run, _ = small_run
    os.mkfifo(tmp_path / "photo.jpg")
    assert cli.main(["explain", "heatmap", run.path, str(tmp_path / "photo.jpg")]) == 2
    assert "not a regular file" in capsys.readouterr().err
    assert cli.main(["explain", "conv", str(tmp_path / "photo.jpg")]) == 2
    assert "not a regular file" in capsys.readouterr().err
