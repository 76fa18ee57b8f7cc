"""explain: the NumPy reference against Keras, the slide's example, and every command's output."""
import keras
import numpy as np
import pytest
from PIL import Image

from smallvision import api, cli
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
    out, _ = api.explain_conv()
    assert "= -8" in out


@pytest.mark.parametrize("n, k, s, padding, expected", [(180, 3, 1, "valid", 178), (5, 3, 1, "same", 5),
                                                          (7, 3, 2, "valid", 3), (7, 3, 2, "same", 4)])
def test_output_size_formula(n, k, s, padding, expected):
    assert ref.output_size(n, k, s, padding) == expected
    assert ref.size_formula(n, k, s, padding).endswith(f"= {expected}")


def test_explain_conv_writes_side_by_side_and_prints_the_formula(tmp_path):
    img = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 41, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "conv.png"
    text, path = api.explain_conv(str(img), "sobel-x", "valid", 2, str(out))
    # rows: floor((30 - 2 - 1)/2) + 1 = 14; columns: floor((41 - 2 - 1)/2) + 1 = 20
    assert "output 14x20" in text and "floor((30 - 1*(3-1) - 1) / 2) + 1 = 14" in text
    assert Image.open(out).size == (41 + GAP + 20, 30)
    kernel_file = tmp_path / "k.txt"
    kernel_file.write_text("# a 1x2 kernel\n1, -1\n")
    text, _ = api.explain_conv(str(img), str(kernel_file), "same", 1, str(out))
    assert "output 30x41" in text and Image.open(out).size == (41 + GAP + 41, 30)


def test_explain_model_receptive_fields_of_the_chapters_convnet():
    text, rows = api.explain_model("scratch", (180, 180))
    fields = {r.name: r.receptive_field for r in rows}
    assert [fields[f"conv{i}"] for i in range(1, 6)] == [3, 8, 18, 38, 78]
    assert [fields[f"pool{i}"] for i in range(1, 5)] == [4, 10, 22, 46]
    assert fields["flatten"] == "whole image"
    assert "991,041 parameters" in text and "conv5 sees 78x78" in text


def test_explain_model_expands_nested_augmentation():
    rows = layer_table(api._model_for("augment", (96, 96))[0])
    assert [r.name for r in rows if r.depth == 1] == ["random_flip", "random_rotation", "random_zoom"]


def test_explain_pooling_numbers():
    text, facts = api.explain_pooling((180, 180))
    assert facts["scratch"]["params"] == 991_041 and facts["nopool"]["params"] == 8_376_897
    assert facts["scratch"]["dense_params"] == 12_545 and facts["nopool"]["dense_params"] == 7_398_401
    assert facts["scratch"]["receptive_field"] == 78 and facts["nopool"]["receptive_field"] == 11
    assert "8,376,897" in text and "78x78" in text and "11x11" in text


def test_explain_pooling_trains_both(tiny_data, tmp_path):
    text, facts = api.explain_pooling((80, 80), train_data=tiny_data, epochs=1, out=tmp_path / "runs",
                                      progress=False)
    assert "after 1 epochs" in text
    for name in ("scratch", "nopool"):
        assert 0 <= facts[name]["validation_accuracy"] <= 1


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
    text, _ = api.explain_activations(run.path, image, str(out), per_layer=8)
    assert Image.open(out).size == (LABEL_WIDTH + 8 * (64 + GAP), 5 * (64 + GAP))
    lines = text.splitlines()
    assert lines[1].startswith("conv1") and "98x98x32" in lines[1] and "2x2x256" in lines[5]


def test_explain_heatmap(small_run, tmp_path):
    run, image = small_run
    out = tmp_path / "heat.png"
    text, _ = api.explain_heatmap(run.path, image, str(out), class_name="bars")
    assert Image.open(out).size == (2 * (2 * 100 + GAP), 2 * 100)
    assert "heatmap for bars" in text and "2x2 grid" in text
    with pytest.raises(Exception, match="not one of"):
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
