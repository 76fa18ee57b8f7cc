"""features-augment and finetune: what is trainable when, BatchNorm kept in inference mode,
training in two stages (with resume between them), and short runs on real photos."""
import keras
import numpy as np
import pytest

from smallvision import api
from smallvision.errors import SmallvisionError
from smallvision import strategies
from smallvision.models.walk import leaves
from smallvision.strategies import features_augment, pretrained
from test_train import check_run_folder, plain_keras_load

LITE0_TOP = {"block15_expand_conv", "block15_dwconv", "block15_project_conv", "top_conv"}


def trainable_layers(model):
    return {layer.name for layer in leaves(model) if layer.trainable_weights}


def bn_stats(model):
    return {v.path: np.array(v) for layer in leaves(model)
            if isinstance(layer, keras.layers.BatchNormalization) for v in layer.non_trainable_weights}


def test_finetune_unfreezes_the_top_block_only_and_batchnorm_statistics_do_not_move():
    keras.utils.set_random_seed(0)
    model = features_augment.build_model((64, 64), 2, 0, 1e-3, {"head": "gap"})
    head = {"dense", "predictions"}
    assert trainable_layers(model) == head  # the whole backbone frozen while the head trains
    x = np.random.default_rng(0).integers(0, 256, (16, 64, 64, 3)).astype("uint8")
    y = np.arange(16) % 2
    before = bn_stats(model)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    base = model.get_layer("efficientnet_lite0")
    top_kernel = np.array(base.get_layer("top_conv").kernel)
    stem_kernel = np.array(base.get_layer("stem_conv").kernel)

    model, unfrozen = pretrained.unfreeze_top_block(model, "efficientnet_lite0", 2, 1e-5)
    assert set(unfrozen) == LITE0_TOP
    assert trainable_layers(model) == head | LITE0_TOP  # BatchNorm layers of the top block stay frozen
    assert not base.get_layer("top_bn").trainable
    assert model.optimizer.learning_rate.numpy() == pytest.approx(1e-5)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    after = bn_stats(model)
    assert len(after) > 100 and after.keys() == before.keys()
    for k in before:  # moving mean/variance: untouched by both stages
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)
    assert not np.array_equal(np.array(base.get_layer("top_conv").kernel), top_kernel)  # the top block learnt
    np.testing.assert_array_equal(np.array(base.get_layer("stem_conv").kernel), stem_kernel)  # the rest did not


def test_the_frozen_base_gives_the_same_features_in_fit_as_in_predict():
    """Keras 3 passes training=True into nested models; noise layers inside a base are switched off."""
    base = pretrained.frozen_base((32, 32), {"backbone": "efficientnet_b0", "weights": None})
    assert any(isinstance(layer, keras.layers.Dropout) for layer in leaves(base))
    x = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.array(base(x, training=True)), np.array(base(x, training=False)), atol=1e-5)


def test_vgg_top_block_is_the_chapters_last_four_layers():
    model = features_augment.build_model((32, 32), 3, 0, 1e-3, {"backbone": "vgg16", "weights": None})
    _, unfrozen = pretrained.unfreeze_top_block(model, "vgg16", 3, 1e-5)
    assert unfrozen == ["block5_conv1", "block5_conv2", "block5_conv3"]  # + block5_pool, which has no weights
    assert "preprocess" not in trainable_layers(model)


def test_two_stages_in_one_run_and_resume_between_them(tiny_data, tmp_path, monkeypatch):
    # a process that stops once the head stage is done (as if killed there) ...
    ft = strategies.get("finetune")
    stages = ft.stages
    monkeypatch.setattr(ft, "stages", lambda config: stages(config)[:1])
    run = api.train(tiny_data, "finetune", out=tmp_path / "runs", epochs=1, head_epochs=1, image_size=64,
                    head="gap", split="0.5,0.25,0.25", verbose=0, progress=False)
    assert run.state.stage == 0 and run.state.epochs_done == 1
    head_model = keras.saving.load_model(run.file("checkpoint", run.state.last))
    assert trainable_layers(head_model) == {"dense", "predictions"}
    monkeypatch.undo()
    # ... and the resumed run enters the fine-tuning stage from the head-stage checkpoint
    resumed = api.resume(run.path, verbose=0, progress=False)
    check_run_folder(resumed, 2)
    assert resumed.metrics["stages"] == {"head": 1, "finetune": 2}
    assert run.config.learning_rate == 1e-5 and run.config.options["head_epochs"] == 1
    final = keras.saving.load_model(run.file("checkpoint", run.state.last))
    assert trainable_layers(final) == {"dense", "predictions"} | LITE0_TOP
    assert final.optimizer.learning_rate.numpy() == pytest.approx(1e-5)
    assert resumed.metrics["params"]["trainable"] == sum(int(np.prod(w.shape)) for w in final.trainable_weights)
    # train further: the fine-tuning stage goes on, not the head stage again
    further = api.resume(run.path, epochs=2, verbose=0, progress=False)
    assert [r["epoch"] for r in further.read_history()] == [1, 2, 3] and further.state.stage == 1


def test_finetune_from_refuses_what_it_cannot_fine_tune(tiny_data, tmp_path):
    scratch = api.train(tiny_data, "scratch", out=tmp_path / "runs", epochs=1, image_size=80,
                        split="0.5,0.25,0.25", verbose=0, progress=False)
    with pytest.raises(SmallvisionError, match="a scratch run; fine-tuning starts from a features-augment"):
        api.train(tiny_data, "finetune", out=tmp_path / "runs", start=scratch.path, progress=False)
    with pytest.raises(SmallvisionError, match="no such run folder or model file"):
        api.train(tiny_data, "finetune", out=tmp_path / "runs", start=tmp_path / "nowhere.keras", progress=False)
    with pytest.raises(SmallvisionError, match="strategy features takes no --head-epochs"):
        api.train(tiny_data, "features", out=tmp_path / "runs", head_epochs=3, progress=False)
    with pytest.raises(SmallvisionError, match=r"strategy scratch takes no --backbone \(it is for: features, "):
        api.train(tiny_data, "scratch", out=tmp_path / "runs", backbone="vgg16", progress=False)


@pytest.mark.realdata
def test_features_augment_then_finetune_from_it_on_real_photos(shared_subset, tmp_path):
    fa = api.train(shared_subset, "features-augment", out=tmp_path / "runs", epochs=2, image_size=64,
                   verbose=0, progress=False)
    check_run_folder(fa, 2)
    assert plain_keras_load(fa.model_path).endswith("(1, 1)")
    ft = api.train(shared_subset, "finetune", out=tmp_path / "runs", epochs=2, start=fa.path, verbose=0,
                   progress=False)
    check_run_folder(ft, 2)
    assert ft.config.image_size == (64, 64)  # taken from the start run
    assert "stages" not in ft.metrics and ft.metrics["test"]["n"] == 16
    assert plain_keras_load(ft.model_path).endswith("(1, 1)")
    rows = api.predict(ft.path, [shared_subset / "test" / "cats"])
    assert len(rows) == 8 and all(r["error"] is None for r in rows)
