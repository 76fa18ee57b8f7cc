"""The chapter's augmentation as one batched layer (:class:`RandomChapterAugmentation`, what
`augment` trains with) against Keras' three layers (what the chapter writes, and what the
published model.keras holds): the same draws, the same geometry, and a JAX step that compiles."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import layers

from smallvision.models.augment import RandomChapterAugmentation, chapter_augmentation

stats = pytest.importorskip("scipy.stats")
H, W = 40, 52  # not square: width and height must not be swapped anywhere


def smooth(n=4):
    """Images without sharp edges, on which one bilinear resampling and two nearly agree."""
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.stack([128 + 100 * np.sin(xx / 7.0 + k) * np.cos(yy / 5.0 + k) for k in range(3)], -1)
    return np.repeat(img[None], n, axis=0).astype("float32")


def keras_draws(n):
    """n draws of Keras' own layers: flip (bool), angle (radians), zoom factor."""
    x = np.zeros((n, H, W, 3), "float32")
    flips = np.asarray(layers.RandomFlip("horizontal", seed=11).get_random_transformation(x)["flips"]).reshape(-1)
    angle = np.asarray(layers.RandomRotation(0.1, seed=12).get_random_transformation(x)["angle"]) * np.pi / 180
    zoom = np.asarray(layers.RandomZoom(0.2, seed=13).get_random_transformation(x)["height_zoom"]).reshape(-1)
    return flips.astype(bool), angle, zoom


def test_it_draws_what_kerass_layers_draw():
    n = 20000
    ours = [np.asarray(v) for v in RandomChapterAugmentation(seed=5).draw(n)]
    theirs = keras_draws(n)
    # flips: both a fair coin (4 standard deviations of a binomial)
    for flips in (ours[0], theirs[0]):
        assert abs(flips.mean() - 0.5) < 4 * np.sqrt(0.25 / n)
    # angles within ±0.1 turn, zoom factors within 1 ± 0.2, both uniform: the same distribution
    assert np.abs(ours[1]).max() <= 0.2 * np.pi and np.abs(ours[1]).max() > 0.199 * np.pi
    assert ours[2].min() >= 0.8 and ours[2].max() <= 1.2 and ours[2].min() < 0.801 and ours[2].max() > 1.199
    for a, b in ((ours[1], theirs[1]), (ours[2], theirs[2])):
        assert stats.ks_2samp(a, b).pvalue > 1e-3
    # and independent of one another (a flipped image is not rotated differently)
    assert abs(np.corrcoef(ours[1], ours[2])[0, 1]) < 0.05
    assert abs(ours[1][ours[0]].mean() - ours[1][~ours[0]].mean()) < 0.05
    # a different seed draws other values; the same seed the same
    again = np.asarray(RandomChapterAugmentation(seed=5).draw(n)[1])
    other = np.asarray(RandomChapterAugmentation(seed=6).draw(n)[1])
    np.testing.assert_array_equal(again, ours[1])
    assert not np.allclose(other, ours[1])


def keras_apply(x, flips, angle, zoom):
    """Keras' three layers, in the chapter's order, with the given draws."""
    n = len(x)
    x = layers.RandomFlip("horizontal").transform_images(x, {"flips": flips.reshape(n, 1, 1, 1), "input_shape": x.shape})
    rot = layers.RandomRotation(0.1)
    deg = (angle * 180 / np.pi).astype("float32")
    z0 = np.zeros(n, "float32")
    matrix = rot._compute_affine_matrix(0.5, 0.5, keras.ops.convert_to_tensor(deg), z0, z0, np.ones(n, "float32"),
                                        z0, z0, H, W)
    x = rot.transform_images(x, {"rotation_matrix": matrix, "angle": deg, "image_height": H, "image_width": W,
                                 "batch_size": n})
    z = zoom.reshape(n, 1).astype("float32")
    return np.asarray(layers.RandomZoom(0.2).transform_images(x, {"height_zoom": z, "width_zoom": z,
                                                                  "input_shape": x.shape}))


def ours_apply(x, flips, angle, zoom):
    layer = RandomChapterAugmentation()
    t = layer.transforms(flips, angle.astype("float32"), zoom.astype("float32"), float(H), float(W))
    return np.asarray(keras.ops.image.affine_transform(x, t, interpolation="bilinear", fill_mode="reflect"))


def test_one_resampling_is_kerass_three_layers_in_their_order():
    x = smooth()
    flips = np.array([False, True, True, False])
    angle = np.array([0.3, -0.5, 0.05, -0.62])
    zoom = np.array([1.15, 0.83, 1.0, 0.95])
    none, zero, one = np.zeros(4, bool), np.zeros(4), np.ones(4)
    # each alone: exactly Keras' layer (the same sampling), so the conventions (direction of the
    # angle, which side a zoom factor above 1 goes, the centre) are Keras'
    for args in ((flips, zero, one), (none, angle, one), (none, zero, zoom)):
        np.testing.assert_allclose(ours_apply(x, *args), keras_apply(x, *args), atol=1e-3)
    # all three: one resampling against three, a fraction of a grey level apart on smooth images
    both = np.abs(ours_apply(x, flips, angle, zoom) - keras_apply(x, flips, angle, zoom))
    inner = both[:, 8:32, 10:42]  # the border is filled by reflection of the input, not of the rotated image
    assert inner.mean() < 0.5 and inner.max() < 3 and both.mean() < 3
    # and not the identity, nor a transform in another order (rotation after zoom is the same,
    # flip after rotation is not)
    assert np.abs(ours_apply(x, flips, angle, zoom) - x).mean() > 10
    wrong_order = keras_apply(keras_apply(x, none, angle, one), flips, zero, zoom)
    assert np.abs(ours_apply(x, flips, angle, zoom)[1] - wrong_order[1]).mean() > 5  # flipped, -0.5 rad


def test_identity_outside_training_and_any_input_it_gets():
    layer = RandomChapterAugmentation(seed=0)
    x = smooth(2)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    np.testing.assert_array_equal(np.asarray(layer(x)), x)  # no training flag: inference
    for batch in (smooth(1), smooth(3).astype("uint8")):
        out = np.asarray(layer(batch, training=True))
        assert out.shape == batch.shape and np.isfinite(out).all() and out.min() >= 0 and out.max() <= 255
    # a model with it saves and loads (registered), keeps its settings, and is the identity in predict
    model = keras.Sequential([keras.Input((H, W, 3)), RandomChapterAugmentation(rotation=0.05, zoom=0.1, seed=3)])
    cfg = model.layers[0].get_config()
    assert (cfg["rotation"], cfg["zoom"], cfg["seed"], cfg["flip"]) == (0.05, 0.1, 3, True)
    clone = keras.Sequential.from_config(model.get_config())
    assert clone.layers[0].rotation == 0.05
    np.testing.assert_array_equal(clone.predict_on_batch(x), x)


def test_a_zero_setting_leaves_that_part_out():
    x = smooth(8)
    np.testing.assert_allclose(np.asarray(RandomChapterAugmentation(flip=False, rotation=0, zoom=0)(x, training=True)),
                               x, atol=1e-3)
    flipped_only = np.asarray(RandomChapterAugmentation(rotation=0, zoom=0, seed=1)(x, training=True))
    for got, img in zip(flipped_only, x):
        assert np.allclose(got, img, atol=1e-3) or np.allclose(got, img[:, ::-1], atol=1e-3)


JAX_STEP = """
import io, json, logging, jax, numpy as np
jax.config.update("jax_log_compiles", True)  # JAX logs every compilation: the whole step, or op by op
log = io.StringIO()
logging.getLogger("jax").addHandler(logging.StreamHandler(log))
from smallvision import strategies
from smallvision.models.augment import chapter_augmentation
from smallvision.models.convnet import chapter_convnet
from smallvision.models.heads import compile_classifier
x = np.random.default_rng(0).integers(0, 256, (8, 80, 80, 3)).astype("uint8"); y = np.arange(8) % 2
out = {}
for name, model in (("ours", strategies.get("augment").build((80, 80), 2, 0, 1e-3)),
                    ("keras", compile_classifier(chapter_convnet((80, 80), 2, augmentation=chapter_augmentation(0)),
                                                 2, "rmsprop"))):
    log.seek(0); log.truncate()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    lines = [l for l in log.getvalue().splitlines() if "ompil" in l]
    out[name] = {"jit": model.jit_compile, "step": sum("jit(train_step)" in l for l in lines), "compiles": len(lines)}
print(json.dumps(out))
"""


@pytest.mark.slow  # a JAX process that compiles two training steps (~20 s): CI's extended tier runs it
@pytest.mark.skipif(not __import__("importlib").util.find_spec("jax"), reason="jax is not installed here")
def test_a_jax_training_step_with_augmentation_is_compiled():
    out = subprocess.run([sys.executable, "-c", JAX_STEP], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["ours"]["jit"] is True and got["ours"]["step"] >= 1  # jax.jit of the whole training step
    assert got["keras"]["jit"] is False and got["keras"]["step"] == 0  # the chapter's layers: op by op,
    assert got["keras"]["compiles"] > 5 * got["ours"]["compiles"]  # each primitive compiled on its own
