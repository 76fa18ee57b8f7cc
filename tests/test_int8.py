"""``--precision int8``: the frozen base quantized (ONNX Runtime static quantization), calibrated
on training images chosen by content; its features cached apart from fp32's; the run's model.onnx
quantized the same way and agreeing with the run's own figures; an unfaithful quantization, or
int8 without ONNX Runtime, is a one-line error."""
import csv
import json
import os

import numpy as np
import pytest

from conftest import shared_cache_dir, tiny_run
from smallvision import api, deploy, runtime
from smallvision.errors import SmallvisionError
from smallvision.strategies.features import calibration_choice
from smallvision.strategies.options import PretrainedOptions


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    # The plumbing, on 16 synthetic 64-px images: they calibrate worse than photos (median cosine
    # 0.975 on an AVX2 CPU without VNNI, under the 0.98 bar), so the bar is lowered here; the
    # bar itself is tested below, and the quality on photos is measured (bench/precision.py).
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runtime, "INT8_FAITHFUL", {"median": 0.9, "min": 0.8})
        run, data, root = tiny_run(tmp_path_factory, "int8", "features", run_onnx=True, precision="int8")
    return run, data, shared_cache_dir(tmp_path_factory)


@pytest.mark.parametrize("flags, machine, saturates", [
    (["fpu", "avx2", "fma"], "x86_64", True),                      # AVX2 only (AMD Zen 3, Intel Skylake client)
    (["avx2", "avx512f", "avx512bw"], "x86_64", True),             # AVX-512 without VNNI (Skylake-SP)
    (["avx2", "avx512f", "avx512_vnni"], "x86_64", False),         # Cascade Lake and later, Zen 4
    (["avx2", "avx_vnni"], "x86_64", False),                       # Alder Lake
    (["avx2", "avx512f", "amx_int8", "avx512_vnni"], "x86_64", False),
    (["fp", "asimd", "asimddp"], "aarch64", False),                # Arm: other kernels
])
def test_which_cpus_get_7_bit_weights(flags, machine, saturates):
    assert runtime.int8_saturates(flags, machine) is saturates


def test_an_int8_run_records_it_and_caches_its_features_apart(trained):
    run, _, cache = trained
    assert json.loads(open(run.file("config.json")).read())["options"]["precision"] == "int8"
    tags = os.listdir(os.path.join(cache, "features"))
    int8 = [t for t in tags if "-64x64-" in t and "-int8-" in t]
    assert int8 and os.listdir(os.path.join(cache, "features", int8[0]))  # rows stored under the int8 tag
    assert any(f.endswith(".onnx") and "-int8-" in f for f in os.listdir(os.path.join(cache, "onnx")))


def test_its_model_onnx_is_quantized_and_agrees_with_its_own_figures(trained):
    import onnx
    run, data, _ = trained
    labels = deploy.current(run.path)
    assert labels.precision == "int8" and labels.check["max_difference"] <= deploy.TOLERANCE  # fp32 vs Keras first
    assert labels.check["int8_vs_fp32"]["calibration_images"] == 16
    ops = {n.op_type for n in onnx.load(run.file("model.onnx")).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    # predict (the quantized model.onnx, on image files) vs the run's evaluation (its head on the
    # cached int8 features): the same decisions, probabilities close (a second quantization of
    # the head's layers is the only difference)
    with open(run.file("predictions.csv")) as f:
        recorded = {os.path.join(data, r["path"]) if not os.path.isabs(r["path"]) else r["path"]: r
                    for r in csv.DictReader(f)}
    rows = [r for r in api.predict(run.path, list(recorded), progress=False)]
    assert len(rows) == len(recorded) == 16
    for r in rows:
        want = recorded[r["path"]]
        assert r["class"] == want["predicted"], r["path"]
        assert r["probability"] == pytest.approx(float(want["probability"]), abs=0.05), r["path"]


@pytest.mark.slow
def test_an_unfaithful_quantization_is_refused_and_leaves_nothing(trained, tmp_path, monkeypatch):
    run, _, cache = trained
    monkeypatch.setattr(runtime, "INT8_FAITHFUL", {"median": 1.01, "min": 1.01})
    monkeypatch.setenv("SMALLVISION_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "d"
    from conftest import make_folder
    make_folder(data, per_class=8)
    with pytest.raises(SmallvisionError, match=r"its int8 quantization is not faithful \(cosine to float32: median"):
        api.train(data, "features", out=tmp_path / "runs", epochs=1, image_size=64, head="gap", verbose=0,
                  progress=False, precision="int8", split="0.5,0.25,0.25")
    onnx_dir = tmp_path / "cache" / "onnx"
    assert not [f for f in os.listdir(onnx_dir) if "-int8-" in f or f.startswith(".tmp")]


def test_int8_refuses_the_keras_runtime_and_a_wrong_choice(tmp_path, monkeypatch):
    monkeypatch.setenv("SMALLVISION_RUNTIME", "keras")
    with pytest.raises(SmallvisionError, match="precision int8 runs on ONNX Runtime, not with --runtime keras"):
        runtime.int8_runner(lambda: None, "k", (np.zeros((1, 8, 8, 3), np.uint8), "t"), what="lite0")
    with pytest.raises(SmallvisionError, match=r"precision must be one of \('fp32', 'int8'\)"):
        api.train(tmp_path, "features", precision="int4")


def test_calibration_images_are_chosen_by_content_and_old_runs_read_as_fp32():
    shas = ["c", "a", "d", "b"]
    assert calibration_choice(shas, 2) == [1, 3]  # "a" and "b", in their order
    assert calibration_choice(list(reversed(shas)), 2) == [0, 2]  # the same two images
    assert PretrainedOptions.from_json({"backbone": "efficientnet_lite0", "head": "gap"}).precision == "fp32"
