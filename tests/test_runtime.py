"""The CPU inference runtime (ONNX Runtime, Keras as the fallback) and the cached augmented
views of features-augment: each fast path is checked against the plain Keras path."""
import os
import sys

import numpy as np
import pytest

from smallvision import api, runtime, strategies
from smallvision.errors import SmallvisionError

pytest.importorskip("onnxruntime", reason="the runtime tests need onnxruntime (a dependency of smallvision)")

TOL = dict(rtol=1e-3, atol=1e-4)  # ONNX Runtime vs Keras on the same float32 network


def _small_model():
    import keras
    images = keras.Input((16, 16, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 255)(images)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(images, keras.layers.Dense(2, activation="softmax")(x), name="small")


def _batch(n=5, size=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3)).astype(np.uint8)


def test_export_is_cached_and_matches_keras(isolated_cache):
    model = _small_model()
    runner = runtime.frozen_runner(model, "small-test", count=None)
    assert runner.name == "onnxruntime" and os.path.isfile(runtime.cache_path("small-test"))
    x = _batch()
    np.testing.assert_allclose(runner(x), model.predict_on_batch(x), **TOL)
    # small work: with auto, a model not exported yet runs on Keras (an export would cost more)...
    assert runtime.frozen_runner(model, "small-other", count=3).name == "keras"
    assert not os.path.exists(runtime.cache_path("small-other"))
    # ...but one already exported is used whatever the count
    assert runtime.frozen_runner(model, "small-test", count=3).name == "onnxruntime"


def test_models_with_augmentation_layers_export_without_them():
    """The augment, features-augment and finetune models carry RandomFlip/Rotation/Zoom, which break
    the ONNX converter (keras#21346); outside training they are the identity, so the export drops them."""
    from smallvision.models.augment import chapter_augmentation
    from smallvision.models.convnet import chapter_convnet
    from smallvision.models.walk import inference_graph
    model = chapter_convnet((80, 80), 2, augmentation=chapter_augmentation(0), dropout=0.5)
    x = _batch(4, 80)
    graph = inference_graph(model)
    assert not [layer for layer in graph.layers if type(layer).__name__.startswith("Random")]
    np.testing.assert_allclose(graph.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-6)
    runner = runtime.frozen_runner(model, "augment-test", count=None)
    assert runner.name == "onnxruntime"
    np.testing.assert_allclose(runner(x), model.predict_on_batch(x), **TOL)


def test_runtime_can_be_forced_and_bad_names_are_refused(monkeypatch):
    model = _small_model()
    monkeypatch.setenv("SMALLVISION_RUNTIME", "keras")
    assert runtime.frozen_runner(model, "k", count=None).name == "keras"
    monkeypatch.setenv("SMALLVISION_RUNTIME", "onnxruntime")
    assert runtime.frozen_runner(model, "k", count=1).name == "onnxruntime"  # forced: exported even for one image
    monkeypatch.setenv("SMALLVISION_RUNTIME", "tensorrt")
    with pytest.raises(SmallvisionError, match="SMALLVISION_RUNTIME must be one of auto, onnxruntime, keras"):
        runtime.frozen_runner(model, "k")
    with pytest.raises(SmallvisionError, match="runtime must be one of"):
        runtime.choose("fast")


def test_without_onnxruntime_auto_falls_back_with_one_line_and_forced_is_an_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    model = _small_model()
    runner = runtime.frozen_runner(model, "absent", what="the small model")
    assert runner.name == "keras"
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["note: the small model: onnxruntime is not installed (pip install onnxruntime tf2onnx); "
                   "running it with Keras instead (slower, same results)"]
    monkeypatch.setenv("SMALLVISION_RUNTIME", "onnxruntime")
    with pytest.raises(SmallvisionError, match="^the small model: onnxruntime is not installed"):
        runtime.frozen_runner(model, "absent", what="the small model")


def test_an_export_that_differs_from_keras_is_never_used(monkeypatch, capsys):
    real = runtime.OnnxRunner.__call__
    monkeypatch.setattr(runtime.OnnxRunner, "__call__", lambda self, x: real(self, x) + 0.01)
    runner = runtime.frozen_runner(_small_model(), "wrong", count=None)
    assert runner.name == "keras" and not os.path.exists(runtime.cache_path("wrong"))
    assert "the ONNX export differs from Keras (max |diff| 0.01); running it with Keras" in capsys.readouterr().err
    assert not [f for f in os.listdir(os.path.dirname(runtime.cache_path("wrong"))) if f.startswith(".tmp")]


def test_a_damaged_cached_export_is_dropped(capsys, isolated_cache):
    path = runtime.cache_path("damaged")
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(b"not an onnx file")
    assert runtime.frozen_runner(_small_model(), "damaged").name == "keras"
    assert not os.path.exists(path) and "cannot be loaded" in capsys.readouterr().err


# -- the cached augmented views ------------------------------------------------------------------

def test_a_view_is_the_same_pixels_wherever_it_is_computed():
    from smallvision.data.augment import chapter_view, view_rng
    image = _batch(1, 64)[0]
    sha = "ab" * 32
    a = chapter_view(image, view_rng(sha, 0, 3))
    assert a.shape == image.shape and a.dtype == np.uint8
    assert np.array_equal(a, chapter_view(image, view_rng(sha, 0, 3)))
    assert not np.array_equal(a, chapter_view(image, view_rng(sha, 0, 4)))
    # no rotation, no zoom, no flip: the image itself
    assert np.array_equal(chapter_view(image, view_rng(sha, 0, 3), flip=False, rotation=0, zoom=0), image)


def test_each_epoch_draws_one_view_per_image_and_every_view_before_a_repeat():
    from smallvision.strategies.features import ViewSet
    n, k = 6, 4
    rows = np.arange(n * k)[:, None]  # row r holds the value r
    views = ViewSet(rows, k, seed=0)
    assert len(views) == n
    idx = np.arange(n)
    seen = np.stack([views.take(idx, epoch)[:, 0] for epoch in range(k)])  # [epoch, image]
    assert (seen // k == idx).all()  # always the image's own views
    assert all(sorted(seen[:, i] % k) == list(range(k)) for i in range(n))
    assert not np.array_equal(ViewSet(rows, k, seed=1).offset, views.offset)


def test_cached_head_and_end_to_end_model_give_the_same_loss_and_head_gradients(shared_subset):
    """On the same augmented images: head(runtime features) vs the chapter's end-to-end model
    (frozen base inside, augmentation off) — loss and the head's gradients agree."""
    import keras
    import tensorflow as tf

    from smallvision.data.augment import chapter_view, view_rng
    from smallvision.data.imagefile import read_image
    from smallvision.data.decode import DecodeSpec
    from smallvision.strategies import features, features_augment

    size = (96, 96)
    o = strategies.get("features-augment").parse_options({"head": "gap"})
    files = sorted((shared_subset / "train").rglob("*.jpg"))[::3][:16]
    labels = np.array([[float("dogs" in str(f))] for f in files], dtype=np.float32)
    images = np.stack([chapter_view(read_image(str(f), DecodeSpec(*size))[0], view_rng("0" * 16, 0, i))
                       for i, f in enumerate(files)])
    keras.utils.set_random_seed(0)
    head = features.head_model(size, 2, 1e-3, o)
    end_to_end = features_augment.end_to_end(head, size, o)
    runner = runtime.frozen_runner(features.extractor(size, o), "parity-96", count=None)
    assert runner.name == "onnxruntime"
    feats = runtime.run_batches(runner, images)

    def loss_and_grads(model, x):
        with tf.GradientTape() as tape:
            loss = keras.losses.binary_crossentropy(labels, model(x, training=False))
            loss = tf.reduce_mean(loss)
        weights = [w for layer in model.layers if layer.name in ("dense", "predictions") for w in layer.trainable_weights]
        return float(loss), [g.numpy() for g in tape.gradient(loss, weights)]

    loss_a, grads_a = loss_and_grads(head, feats)
    loss_b, grads_b = loss_and_grads(end_to_end, images)
    assert abs(loss_a - loss_b) <= 1e-5 * max(1.0, abs(loss_b))
    assert len(grads_a) == len(grads_b) == 4
    for a, b in zip(grads_a, grads_b):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.slow  # default tier under 5 minutes: CI's extended tier runs it
def test_features_augment_on_views_reuses_them_across_seeds_and_saves_the_chapters_model(tmp_path, isolated_cache):
    import keras

    from conftest import make_folder
    data = make_folder(tmp_path / "split", splits={"train": 8, "validation": 4, "test": 4})
    kw = dict(out=tmp_path / "runs", epochs=1, image_size=64, verbose=0, progress=False)
    run = api.train(data, "features-augment", views=3, **kw)
    assert run.config.options == {"backbone": "efficientnet_lite0", "head": "gap", "classifier": "chapter",
                                  "weights": "imagenet", "precision": "fp32", "views": 3}  # every option recorded, resolved
    shards = lambda: sorted(p.name for p in isolated_cache.glob("views/chapter/*/*.u8"))
    first = shards()
    assert len(first) == 1 and os.path.getsize(isolated_cache / "views" / "chapter" /
                                               os.listdir(isolated_cache / "views" / "chapter")[0] / first[0]) \
        == 16 * 3 * 1280 * 2  # 16 training images x 3 views x 1280 float16
    again = api.train(data, "features-augment", views=3, seed=1, **kw)
    assert again.status.status == "finished" and shards() == first
    more = api.train(data, "features-augment", views=5, **kw)  # only the two new views are computed
    assert more.status.status == "finished" and len(shards()) == 2
    model = keras.saving.load_model(run.model_path)
    assert "data_augmentation" in [layer.name for layer in model.layers]  # the chapter's model, as saved before
    exact = api.train(data, "features-augment", views="exact", **kw)
    assert exact.status.status == "finished" and len(shards()) == 2  # nothing cached in exact mode
    with pytest.raises(SmallvisionError, match=r"views must be a whole number >= 1 or 'exact'. Received: views='0'"):
        api.train(data, "features-augment", views="0", **kw)


@pytest.mark.slow
@pytest.mark.realdata
def test_a_saved_model_decides_the_shared_test_split_alike_on_both_runtimes(shared_subset, tmp_path, monkeypatch):
    """Features of real photos equal Keras' to 1e-4, and a run's model.keras gives the same class
    to every one of the 2,000 shared test photos through ONNX Runtime as through Keras."""
    from conftest import SHARED_DATA
    from smallvision.data.imagefile import read_image
    from smallvision.data.decode import DecodeSpec
    from smallvision.strategies import features

    size, o = (160, 160), strategies.get("features").read_options({"head": "gap"})
    photos = sorted((SHARED_DATA / "test").rglob("*.jpg"))[::50]
    images = np.stack([read_image(str(f), DecodeSpec(*size))[0] for f in photos])
    model = features.extractor(size, o)
    ort = runtime.frozen_runner(model, "parity-160", count=None)
    assert ort.name == "onnxruntime"
    np.testing.assert_allclose(runtime.run_batches(ort, images), runtime.run_batches(runtime.KerasRunner(model), images),
                               rtol=1e-3, atol=1e-4)

    run = api.train(shared_subset, "features", out=tmp_path / "runs", epochs=3, image_size=160, verbose=0,
                    progress=False)
    test = [str(SHARED_DATA / "test")]
    monkeypatch.setenv("SMALLVISION_RUNTIME", "keras")
    by_keras = api.predict(run.path, test, progress=False)
    monkeypatch.setenv("SMALLVISION_RUNTIME", "onnxruntime")
    by_ort = api.predict(run.path, test, progress=False)
    assert len(by_keras) == len(by_ort) == 2000
    assert [r["class"] for r in by_ort] == [r["class"] for r in by_keras]
    diff = max(abs(a["probability"] - b["probability"]) for a, b in zip(by_ort, by_keras))
    assert diff <= 1e-4, diff


def test_predict_tta_averages_each_image_with_its_mirror(tmp_path):
    import keras
    from PIL import Image
    model = _small_model()
    path = tmp_path / "small.keras"
    model.save(path)
    x = _batch(3, 16, seed=4)
    files = []
    for i, image in enumerate(x):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(image).save(files[-1])
    plain = api.predict(path, [str(f) for f in files], progress=False)
    tta = api.predict(path, [str(f) for f in files], progress=False, tta=True)
    loaded = keras.saving.load_model(path)
    expected = (loaded.predict_on_batch(x) + loaded.predict_on_batch(x[:, :, ::-1])) / 2
    for row, p, e in zip(tta, plain, expected):
        assert [row["probabilities"][c] for c in ("class_0", "class_1")] == pytest.approx(e, abs=1e-5)
        assert row["probabilities"] != p["probabilities"]
