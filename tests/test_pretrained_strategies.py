"""features-augment and finetune: what is trainable when, BatchNorm kept in inference mode,
training in two stages (with resume between them), and short runs on real photos."""
import os

import keras
import numpy as np
import pytest

from smallvision import api
from smallvision.errors import SmallvisionError
from smallvision import strategies
from smallvision.models.walk import leaves
from smallvision.strategies import features_augment, finetune, pretrained

FA = strategies.get("features-augment")
from test_train import check_run_folder, plain_keras_load

LITE0_TOP = {"block15_expand_conv", "block15_dwconv", "block15_project_conv", "top_conv"}


def trainable_layers(model):
    return {layer.name for layer in leaves(model) if layer.trainable_weights}


def bn_stats(model):
    return {v.path: np.array(v) for layer in leaves(model)
            if isinstance(layer, keras.layers.BatchNormalization) for v in layer.non_trainable_weights}


def test_finetune_unfreezes_the_top_block_only_and_batchnorm_statistics_do_not_move():
    keras.utils.set_random_seed(0)
    model = features_augment.build_model((64, 64), 2, 0, 1e-3, FA.read_options({"head": "gap"}))
    head = {"dense", "predictions"}
    assert trainable_layers(model) == head  # the whole backbone frozen while the head trains
    x = np.random.default_rng(0).integers(0, 256, (16, 64, 64, 3)).astype("uint8")
    y = np.arange(16) % 2
    before = bn_stats(model)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    base = model.get_layer("efficientnet_lite0")
    top_kernel = np.array(base.get_layer("top_conv").kernel)
    stem_kernel = np.array(base.get_layer("stem_conv").kernel)

    top = finetune.top_model(model, 2, 1e-5)  # the lower part's map -> top block -> head, sharing weights
    assert top.input_shape == (None, 2, 2, 192)  # block14's output at 64 px
    assert trainable_layers(top) == head | LITE0_TOP  # BatchNorm layers of the top block stay frozen
    assert not base.get_layer("top_bn").trainable
    assert top.optimizer.learning_rate.numpy() == pytest.approx(1e-5)
    lower = finetune.lower_extractor((64, 64), FA.read_options({"head": "gap"})).predict_on_batch(x)
    top.fit(lower, y, epochs=2, batch_size=8, verbose=0)
    after = bn_stats(model)
    assert len(after) > 100 and after.keys() == before.keys()
    for k in before:  # moving mean/variance: untouched by both stages
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)
    assert not np.array_equal(np.array(base.get_layer("top_conv").kernel), top_kernel)  # the top block learnt
    np.testing.assert_array_equal(np.array(base.get_layer("stem_conv").kernel), stem_kernel)  # the rest did not


def test_one_finetune_step_on_cached_maps_equals_the_end_to_end_step(monkeypatch):
    """The same batch, the same weights: one RMSprop step of the top model on the lower part's maps
    gives the loss, gradients and new weights of one step of the chapter's whole model."""
    from smallvision.models import augment
    monkeypatch.setattr(augment, "chapter_augmentation",  # the same images reach the base in both
                        lambda seed: keras.Sequential([keras.layers.Identity()], name="data_augmentation"))
    size, o = (64, 64), FA.read_options({"head": "gap"})
    x = np.random.default_rng(2).integers(0, 256, (8, 64, 64, 3)).astype("uint8")
    y = (np.arange(8) % 2).astype("float32")[:, None]
    models = []
    for _ in range(2):
        keras.utils.set_random_seed(0)
        full = features_augment.build_model(size, 2, 0, 1e-3, o)
        full.get_layer("dropout").rate = 0.0  # dropout draws differ between two graphs
        models.append(full)
    end_to_end, full = models
    top = finetune.top_model(full, 2, 1e-5)
    finetune.top_model(end_to_end, 2, 1e-5)  # makes the same layers trainable in the whole model
    end_to_end.compile(optimizer=keras.optimizers.RMSprop(1e-5), loss="binary_crossentropy")
    lower = finetune.lower_extractor(size, o).predict_on_batch(x)
    trained = lambda m: {w.path.split("/")[-2] + "/" + w.path.split("/")[-1]: np.array(w) for w in m.trainable_weights}
    assert trained(top).keys() == trained(end_to_end).keys() and len(trained(top)) == 8  # 4 conv kernels, 2 Dense
    loss_top = float(top.train_on_batch(lower, y)[0])
    loss_e2e = float(np.ravel(end_to_end.train_on_batch(x, y))[0])
    assert loss_top == pytest.approx(loss_e2e, rel=1e-5)
    a, b = trained(top), trained(end_to_end)
    for k in a:  # an RMSprop step moves each weight by ~lr * sqrt(10) = 3e-5: the two agree far below that
        np.testing.assert_allclose(a[k], b[k], atol=1e-7, err_msg=k)


def test_the_frozen_base_gives_the_same_features_in_fit_as_in_predict():
    """Keras 3 passes training=True into nested models; noise layers inside a base are switched off."""
    from smallvision.strategies.options import PretrainedOptions
    base = pretrained.frozen_base((32, 32), PretrainedOptions(backbone="efficientnet_b0", weights=None))
    assert any(isinstance(layer, keras.layers.Dropout) for layer in leaves(base))
    x = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.array(base(x, training=True)), np.array(base(x, training=False)), atol=1e-5)


def test_vgg_top_block_is_the_chapters_last_four_layers():
    model = features_augment.build_model((32, 32), 3, 0, 1e-3, FA.read_options({"backbone": "vgg16"}).replace(weights=None))
    top = finetune.top_model(model, 3, 1e-5)
    unfrozen = [layer.name for layer in leaves(top) if layer.trainable and layer.weights]
    assert unfrozen == ["block5_conv1", "block5_conv2", "block5_conv3", "dense", "predictions"]  # + block5_pool
    assert top.input_shape == (None, 2, 2, 512)  # block4_pool's output at 32 px


@pytest.mark.slow  # kill/resume: the extended tier
def test_two_stages_in_one_run_and_resume_between_them(tiny_data, tmp_path, monkeypatch):
    # a process that stops once the head stage is done (as if killed there) ...
    ft = strategies.get("finetune")
    stages = ft.stages
    monkeypatch.setattr(ft, "stages", lambda spec, num_classes: stages(spec, num_classes)[:1])
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
    # model.keras (augmentation, whole base with the fine-tuned top block, head) predicts what the
    # run evaluated with its top model on the cached lower-part maps (kept as float16: |dp| <= 1e-3)
    evaluated = {r["path"]: float(r["p_true"]) for r in ft.read_predictions() if r["split"] == "test"}
    for r in rows:
        key = os.path.relpath(r["path"], shared_subset).replace(os.sep, "/")
        assert r["probabilities"]["cats"] == pytest.approx(evaluated[key], abs=1e-3), key


def test_finetune_fills_the_maps_and_the_pooled_views_in_one_frozen_pass(tiny_data, isolated_cache, monkeypatch):
    """One pass of the frozen base fills both caches fine-tuning needs (the lower part's maps, and
    the pooled vectors the head stage trains on): the base runs once per image and view, and the
    pooled rows equal what the plain extractor computes (float16 cache: to 2e-3)."""
    from smallvision.data import DecodeSpec, prepare
    from smallvision.strategies import features
    import smallvision.runtime as runtime
    prep = prepare(tiny_data, DecodeSpec(64, 64), (0.5, 0.25, 0.25), seed=0, progress=False)
    o = strategies.get("finetune").parse_options({"head": "gap", "views": 2})
    runs = []
    frozen = runtime.frozen_runner
    monkeypatch.setattr(runtime, "frozen_runner", lambda model, key, **kw: runs.append(key) or frozen(model, key, **kw))
    lower = finetune.lower_inputs(prep, o, False, 0)
    assert len(runs) == 2 and all("lower-block14_add+gap" in k for k in runs)  # clean maps, then the views
    assert lower["train"].rows.shape == (2 * 16, 2, 2, 192)
    del runs[:]
    pooled = features_augment.view_inputs(prep, o, False, 0)  # all cached: no pass at all
    assert runs == []
    assert pooled["train"].rows.shape == (2 * 16, 1280) and pooled["test"].shape == (8, 1280)
    plain = features.extractor((64, 64), o)
    for split in ("validation", "test"):
        want = plain.predict_on_batch(np.stack([prep.images[split][i] for i in range(len(prep.images[split]))]))
        np.testing.assert_allclose(np.asarray(pooled[split].take(np.arange(8)), np.float32), want, atol=2e-3, rtol=2e-3)
    assert finetune.lower_inputs(prep, o, False, 1)["train"].rows.shape == (32, 2, 2, 192) and runs == []


def test_a_rows_shape_is_kept_beside_the_cache_so_a_warm_run_builds_no_network(tmp_path, monkeypatch):
    from smallvision.strategies import features
    from smallvision.strategies.options import PretrainedOptions
    monkeypatch.setenv("SMALLVISION_CACHE", str(tmp_path))
    monkeypatch.setattr(features, "_SHAPES", {})
    o = PretrainedOptions(backbone="efficientnet_lite0", head="gap", classifier="chapter", weights="imagenet")
    built = []
    build = lambda weights: built.append(weights) or type("M", (), {"output_shape": (None, 1280)})()  # noqa: E731
    assert features.Extractor(o, (96, 96), build=build).shape == (1280,) and built == [False]
    saved = list((tmp_path / "shapes").iterdir())
    assert len(saved) == 1 and '"shape"' in saved[0].read_text()
    monkeypatch.setattr(features, "_SHAPES", {})  # a new process: read from the file, nothing built
    assert features.Extractor(o, (96, 96), build=build).shape == (1280,) and built == [False]
    saved[0].write_text("{damaged")  # a damaged file: built once more, and written again
    monkeypatch.setattr(features, "_SHAPES", {})
    assert features.Extractor(o, (96, 96), build=build).shape == (1280,) and built == [False, False]
    assert '"shape"' in saved[0].read_text()


def test_a_cold_cache_builds_the_head_a_warm_one_builds(tmp_path, monkeypatch):
    """Learning a row's shape builds the backbone without weights, and that build draws its
    initializers' seeds from Python's generator: the head built after it must start from the very
    weights a warm cache (which builds nothing) gives, or a run depends on what was cached before
    it (it did: the first of two identical features-augment runs trained another curve)."""
    from smallvision import runner
    from types import SimpleNamespace

    from smallvision.strategies import features
    from smallvision.strategies.options import PretrainedOptions
    monkeypatch.setenv("SMALLVISION_CACHE", str(tmp_path))
    o = PretrainedOptions(backbone="efficientnet_lite0", head="gap", classifier="chapter", weights=None)
    spec = SimpleNamespace(strategy="features-augment", image_size=(64, 64), seed=3, learning_rate=1e-3, options=o)
    heads = []
    for cold in (True, False, True):
        monkeypatch.setattr(features, "_SHAPES", {})
        if cold:
            for f in (tmp_path / "shapes").glob("*"):
                f.unlink()
        heads.append(runner.build(spec, 2).get_weights())
    assert (tmp_path / "shapes").is_dir()
    for other in heads[1:]:
        for a, b in zip(heads[0], other):
            np.testing.assert_array_equal(a, b)
