"""Mixed precision (smallvision.mixed, ``--mixed-precision``): the mode chosen per device, the
dtype policy set only while a run builds and trains, the checkpoint trained in it, and the
published model float32 with the same weights."""
import csv
import json

import numpy as np
import pytest

from smallvision import api, mixed
from smallvision.errors import SmallvisionError
from smallvision.fitting import load_checkpoint
from smallvision.runs import Run, load_model
from test_train import check_run_folder, plain_keras_load

keras = pytest.importorskip("keras")


@pytest.mark.parametrize("accelerator, mode", [
    (("cpu", None), "off"),
    (("gpu", (9, 0)), "bfloat16"),  # H100
    (("gpu", (8, 0)), "bfloat16"),  # A100
    (("gpu", (7, 5)), "float16"),   # T4: no bfloat16 units
    (("gpu", (7, 0)), "float16"),   # V100
    (("gpu", (6, 1)), "off"),       # Pascal: no tensor cores
    (("gpu", None), "bfloat16"),
    (("tpu", None), "bfloat16"),
])
def test_auto_follows_the_device(accelerator, mode):
    assert mixed.resolve("auto", accelerator) == mode
    assert mixed.resolve(None, accelerator) == mode
    for asked in ("off", "float16", "bfloat16"):  # asked for: as asked, on any device
        assert mixed.resolve(asked, accelerator) == asked


def test_this_cpu_trains_in_float32_by_default():
    assert mixed.resolve("auto") == "off"


def test_modes_parse_and_bad_ones_fail_in_one_line():
    assert [mixed.parse(v) for v in ("BF16", "fp16", "mixed_bfloat16", "float32", " off ")] == \
        ["bfloat16", "float16", "bfloat16", "off", "off"]
    with pytest.raises(SmallvisionError, match=r"mixed_precision must be one of auto, off, float16, bfloat16\. "
                                               r"Received: mixed_precision='half'"):
        mixed.parse("half")
    with pytest.raises(SmallvisionError, match="Received: mixed_precision='int8'"):
        api.train("nowhere", "scratch", mixed_precision="int8", progress=False)


def test_the_verbs_take_the_setting_and_refuse_a_bad_one(tiny_data, tmp_path, capsys):
    from smallvision import cli
    with pytest.raises(SystemExit):
        cli.main(["train", str(tiny_data), "--mixed-precision", "half"])
    assert "invalid choice: 'half'" in capsys.readouterr().err
    with pytest.raises(SmallvisionError, match="Received: mixed_precision='half'"):
        api.ladder(tiny_data, out=tmp_path / "ladder", mixed_precision="half", progress=False)
    assert not (tmp_path / "ladder").exists()
    spec = api.TrainSpec.parse("augment", mixed_precision="bf16")
    assert spec.mixed_precision == "bfloat16" and spec.with_(epochs=3).mixed_precision == "bfloat16"


def test_the_policy_is_set_only_inside_the_scope():
    assert keras.mixed_precision.dtype_policy().name == "float32"
    with pytest.raises(RuntimeError):
        with mixed.scope("float16"):
            assert keras.mixed_precision.dtype_policy().name == "mixed_float16"
            raise RuntimeError("a failure inside")
    assert keras.mixed_precision.dtype_policy().name == "float32"
    with mixed.scope("off"):
        assert keras.mixed_precision.dtype_policy().name == "float32"


def _nested_model(num_classes=3):
    """A model like the pretrained strategies' published ones: a nested base, a nested head,
    the smallvision augmentation layer, BatchNorm (its moving statistics are weights too)."""
    from smallvision.models.augment import RandomChapterAugmentation
    from smallvision.models.heads import classifier_output
    layers = keras.layers
    base_in = keras.Input((32, 32, 3))
    y = layers.Conv2D(8, 3, activation="relu")(base_in)
    y = layers.BatchNormalization()(y)
    base = keras.Model(base_in, layers.Conv2D(16, 3, strides=2, activation="relu")(y), name="base")
    head_in = keras.Input(base.output.shape[1:])
    head = keras.Model(head_in, classifier_output(layers.GlobalAveragePooling2D()(head_in), num_classes), name="head")
    images = keras.Input((32, 32, 3), name="image")
    x = RandomChapterAugmentation(seed=3)(images)
    x = layers.Rescaling(1 / 255)(x)
    return keras.Model(images, head(base(x)), name="nested")


@pytest.mark.parametrize("mode", ["bfloat16", "float16"])
def test_as_float32_keeps_every_weight_and_computes_in_float32(mode):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 32, 32, 3)).astype("uint8")
    with mixed.scope(mode):
        model = _nested_model()
    bn = model.get_layer("base").layers[2]
    bn.moving_mean.assign(rng.normal(size=bn.moving_mean.shape).astype("float32"))  # not the initial values
    assert mixed.is_mixed(model)
    assert model.output.dtype == "float32"  # the output layer is float32 under any policy
    assert model.get_layer("head").layers[-1].dtype_policy.name == "float32"
    assert all(str(w.dtype) == "float32" for w in model.weights)  # a mixed policy keeps float32 variables

    published = mixed.as_float32(model)
    assert published is not model and not mixed.is_mixed(published)
    assert {layer.dtype_policy.name for layer in [published] + list(_leaves(published))} == {"float32"}
    for a, b in zip(model.get_weights(), published.get_weights()):
        np.testing.assert_array_equal(a, b)
    with mixed.scope("off"):  # the same architecture built in float32 with the same weights: the same function
        plain = _nested_model()
    plain.set_weights(model.get_weights())
    np.testing.assert_allclose(published.predict(images, verbose=0), plain.predict(images, verbose=0), atol=1e-6)
    low = model.predict(images, verbose=0)  # the mixed model itself: close, not equal
    assert np.abs(low - plain.predict(images, verbose=0)).max() < 0.05
    assert mixed.as_float32(plain) is plain


def _leaves(model):
    from smallvision.models.walk import leaves
    return leaves(model)


def test_saved_mode_reads_the_file(tmp_path):
    for mode in ("off", "bfloat16", "float16"):
        with mixed.scope(mode):
            model = _nested_model()
        model.save(tmp_path / f"{mode}.keras")
        assert mixed.saved_mode(tmp_path / f"{mode}.keras") == mode
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    assert mixed.saved_mode(tmp_path / "broken.keras") == "off"


def _test_rows(run):
    with open(run.file("predictions.csv"), newline="") as f:
        return [r for r in csv.DictReader(f) if r["split"] == "test"]


@pytest.mark.slow  # two float16 runs (train, resume) and a predict: ~70 s on this CPU
def test_a_float16_run_trains_scaled_resumes_and_publishes_float32(tiny_data, tmp_path):
    run = api.train(tiny_data, "augment", out=tmp_path / "runs", epochs=2, image_size=80, split="0.5,0.25,0.25",
                    mixed_precision="float16", verbose=0, progress=False)
    check_run_folder(run, 2)
    config = json.loads(open(run.file("config.json")).read())
    assert config["mixed_precision"] == "float16" and config["optimizer"] == "rmsprop"
    last = load_checkpoint(run.file("checkpoint", run.state.last))  # the checkpoint: as trained
    assert mixed.is_mixed(last) and type(last.optimizer).__name__ == "LossScaleOptimizer"
    assert int(last.optimizer.iterations) > 0 and float(last.optimizer.dynamic_scale) > 1
    assert keras.mixed_precision.dtype_policy().name == "float32"  # the run set it back

    published = load_model(run.model_path)
    assert not mixed.is_mixed(published)
    plain_keras_load(run.model_path)
    rows = _test_rows(run)  # metrics.json and predictions.csv come from the published float32 model
    out = api.predict(run.path, [str(tiny_data / r["path"]) for r in rows], progress=False)
    for row, p in zip(rows, out):
        assert p["class"] == row["predicted"]
        assert abs(p["probability"] - float(row["probability"])) < 1e-4

    more = api.resume(run.path, epochs=3, verbose=0, progress=False)
    check_run_folder(more, 3)
    assert more.config.mixed_precision == "float16"
    resumed = load_checkpoint(more.file("checkpoint", more.state.last))
    assert type(resumed.optimizer).__name__ == "LossScaleOptimizer" and resumed.optimizer.iterations > \
        last.optimizer.iterations


def test_runs_record_the_mode_and_older_ones_read_as_float32(tiny_data, tmp_path):
    run = api.train(tiny_data, "scratch", out=tmp_path / "runs", epochs=1, image_size=80, split="0.5,0.25,0.25",
                    verbose=0, progress=False)
    assert run.config.mixed_precision == "off"  # auto, on this CPU
    config = json.loads(open(run.file("config.json")).read())
    assert config["mixed_precision"] == "off"
    config.pop("mixed_precision")  # as versions before mixed precision wrote it
    open(run.file("config.json"), "w").write(json.dumps(config))
    assert Run.open(run.path).config.mixed_precision == "off"
    assert api.TrainSpec.from_config(Run.open(run.path).config).mixed_precision == "off"


@pytest.mark.slow  # two runs of the chapter's convnet, 6 epochs each (~80 s here: bfloat16 is emulated on a CPU)
def test_bfloat16_learns_what_float32_learns(tmp_path):
    """Accuracy against float32 on a task both solve: the same run in both modes reaches the
    same validation accuracy and a close loss (bfloat16 keeps 8 bits of mantissa)."""
    from conftest import make_folder
    data = make_folder(tmp_path / "d", per_class=40, size=96)
    figures = {}
    for mode in ("off", "bfloat16"):
        run = api.train(data, "scratch", out=tmp_path / mode, epochs=6, image_size=80, split="0.5,0.25,0.25",
                        mixed_precision=mode, verbose=0, progress=False)
        figures[mode] = run.metrics["validation"], [r["loss"] for r in run.read_history()]
    (v32, loss32), (v16, loss16) = figures["off"], figures["bfloat16"]
    assert abs(loss16[0] - loss32[0]) < 0.01  # same start, same batches: the first epoch agrees closely
    assert np.abs(np.array(loss16[:5]) - loss32[:5]).max() < 0.05  # measured: 0.012
    assert v32["accuracy"] >= 0.75 and v16["accuracy"] >= 0.75  # measured: 0.85 and 0.80 of 20
    assert abs(v16["accuracy"] - v32["accuracy"]) <= 0.15
