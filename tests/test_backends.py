"""The code stays backend-agnostic: a subset of the suite re-runs under PyTorch and JAX where
they are installed (CI installs torch; the GPU machines we borrow have torch and JAX)."""
import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).parent
SUBSET = ("matches_keras or gradients or heatmap or slide or batches_are_uint8 or early_stopping or logits_match "
          "or train_further or predict_applies or features_strategy_end_to_end")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_subset_on_another_backend(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed here")
    files = [str(HERE / f) for f in ("test_explain.py", "test_pipeline.py", "test_train.py", "test_predict_cli.py",
                                      "test_efficientnet_lite.py")]
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", SUBSET, *files],
                         capture_output=True, text=True, cwd=HERE.parent, timeout=1200,
                         env={**os.environ, "KERAS_BACKEND": backend})
    tail = out.stdout[-3000:]
    assert out.returncode == 0, tail
    assert " passed" in tail and "failed" not in tail
