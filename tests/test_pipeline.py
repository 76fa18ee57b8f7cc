"""Cache, splits and the Dataset."""
import os

import numpy as np
import pytest

from smallvision.data import prepare
from smallvision.data.cache import DecodeCache
from smallvision.data.dataset import ImageBatches, balanced_class_weight
from smallvision.data.decode import DecodeSpec
from smallvision.data.imagefile import read_image
from smallvision.data.scan import scan
from smallvision.data.split import make_splits
from conftest import make_folder

SPEC = DecodeSpec(80, 80)


def test_cache_holds_exactly_what_the_decoder_gives(tiny_data, isolated_cache):
    index = scan(tiny_data, SPEC, progress=False)
    cache = DecodeCache(SPEC)
    view = cache.images([e.sha256 for e in index.entries])
    for i in (0, 5, 31):
        expected, _ = read_image(tiny_data / index.entries[i].path, SPEC)
        np.testing.assert_array_equal(view[i], expected)
    assert view.take([3, 1]).shape == (2, 80, 80, 3)


def test_uncommitted_or_damaged_shards_are_ignored(tiny_data, isolated_cache):
    index = scan(tiny_data, SPEC, progress=False)
    folder = DecodeCache(SPEC).dir
    shard = [n for n in os.listdir(folder) if n.endswith(".u8")][0]
    # a writer killed before its commit leaves only a temporary file
    with open(os.path.join(folder, ".tmp-dead.u8"), "wb") as f:
        f.write(b"\1" * 1000)
    # a shard cut short (disk full, copied half) no longer matches its record
    with open(os.path.join(folder, shard), "r+b") as f:
        f.truncate(1234)
    assert len(DecodeCache(SPEC)) == 0
    again = scan(tiny_data, SPEC, progress=False)  # re-decodes into a fresh shard
    assert len(DecodeCache(SPEC)) == len(again.entries) == len(index.entries)


def test_two_sizes_share_the_scan_but_not_the_pixels(tiny_data, isolated_cache):
    scan(tiny_data, SPEC, progress=False)
    scan(tiny_data, DecodeSpec(96, 96), progress=False)
    assert len(DecodeCache(SPEC)) == len(DecodeCache(DecodeSpec(96, 96))) == 32


def test_stratified_split_is_seeded_and_per_class(tmp_path):
    root = make_folder(tmp_path / "d", per_class=20)
    index = scan(root, progress=False)
    a = make_splits(index, (0.5, 0.25, 0.25), seed=1)
    b = make_splits(index, (0.5, 0.25, 0.25), seed=1)
    c = make_splits(index, (0.5, 0.25, 0.25), seed=2)
    assert a.train == b.train and a.train != c.train
    for name, ps in a.items():
        labels = [index.entries[p].label for p in ps]
        assert labels.count(0) == labels.count(1) == {"train": 10, "validation": 5, "test": 5}[name]
    assert sorted(a.train + a.validation + a.test) == list(range(40))


def test_identical_files_stay_in_one_split(tmp_path):
    root = make_folder(tmp_path / "d", per_class=20)
    src = sorted((root / "bars").iterdir())[0]
    for k in range(5):
        (root / "bars" / f"copy{k}.jpg").write_bytes(src.read_bytes())
    index = scan(root, progress=False)
    for seed in range(5):
        splits = make_splits(index, (0.5, 0.25, 0.25), seed=seed)
        [dup] = splits.duplicates
        assert dup["kind"] == "duplicate within a split" and len(dup["files"]) == 6


def test_leakage_across_given_splits_is_reported(tmp_path):
    root = make_folder(tmp_path / "d", splits={"train": 4, "validation": 2, "test": 2})
    leaked = sorted((root / "train" / "discs").iterdir())[0]
    (root / "test" / "discs" / "leak.jpg").write_bytes(leaked.read_bytes())
    (root / "train" / "bars" / "mislabelled.jpg").write_bytes(leaked.read_bytes())
    splits = make_splits(scan(root, progress=False))
    [dup] = splits.duplicates
    assert dup["kind"] == "conflicting labels" and dup["splits"] == ["test", "train"]
    assert len(dup["files"]) == 3


def test_missing_validation_folder_is_carved_from_train(tmp_path):
    root = make_folder(tmp_path / "d", splits={"train": 20, "test": 3})
    index = scan(root, progress=False)
    splits = make_splits(index, (0.7, 0.15, 0.15), seed=0)
    assert splits.origin == "folders+carved validation"
    assert len(splits.validation) == 2 * round(20 * 0.15 / 0.85) and len(splits.test) == 6


def test_batches_are_uint8_with_labels_shaped_for_the_loss(tiny_data):
    prep = prepare(tiny_data, SPEC, (0.5, 0.25, 0.25), seed=0, progress=False)
    ds = ImageBatches(prep.images["train"], prep.labels["train"], 2, batch_size=5)
    x, y = ds[0]
    assert x.dtype == np.uint8 and x.shape == (5, 80, 80, 3)
    assert y.dtype == np.float32 and y.shape == (5, 1)
    assert len(ds) == 4 and ds[3][0].shape[0] == 1  # 16 images: 5+5+5+1
    multi = ImageBatches(prep.images["train"], prep.labels["train"], 3, batch_size=5)
    assert multi[0][1].dtype == np.int32 and multi[0][1].shape == (5,)


def test_shuffle_is_per_epoch_and_reproducible(tiny_data):
    prep = prepare(tiny_data, SPEC, (0.5, 0.25, 0.25), seed=0, progress=False)
    ds = ImageBatches(prep.images["train"], prep.labels["train"], 2, batch_size=16, shuffle=True, seed=7)
    first = ds[0][0]
    ds.on_epoch_end()
    second = ds[0][0]
    assert not np.array_equal(first, second)
    resumed = ImageBatches(prep.images["train"], prep.labels["train"], 2, batch_size=16, shuffle=True, seed=7,
                           epoch=1)
    np.testing.assert_array_equal(resumed[0][0], second)


@pytest.mark.parametrize("weighted", [False, True])
def test_tf_data_feed_gives_the_pydatasets_batches(tiny_data, weighted):
    """fit() on TensorFlow reads ImageBatches through tf.data: the same batches, in the same order,
    epoch after epoch (shuffled per epoch, per-epoch views, last short batch, sample weights)."""
    import keras
    if keras.backend.backend() != "tensorflow":
        pytest.skip("not the TensorFlow backend: fit gets the PyDataset itself")
    from smallvision.data.dataset import fit_input

    class Views:  # a per-epoch input: the image plus the epoch number
        per_epoch = True

        def __init__(self, images):
            self.images = images

        def __len__(self):
            return len(self.images)

        def take(self, idx, epoch):
            return self.images.take(idx).astype(np.int32) + 1000 * epoch

    prep = prepare(tiny_data, SPEC, (0.5, 0.25, 0.25), seed=0, progress=False)
    labels = prep.labels["train"]
    w = balanced_class_weight(labels, 2) if weighted else None
    ds = ImageBatches(Views(prep.images["train"]), labels, 2, batch_size=5, shuffle=True, seed=3, class_weight=w)
    tf_ds, (callback,) = fit_input(ds)
    got = {}
    for epoch in (2, 3, 4):
        callback.on_epoch_begin(epoch)
        got[epoch] = [tuple(t.numpy() for t in b) for b in tf_ds]
        assert len(got[epoch]) == len(ds) == 4
    for epoch, i in [(e, i) for e in got for i in range(4)]:
        batch = got[epoch][i]
        want = ImageBatches(Views(prep.images["train"]), labels, 2, batch_size=5, shuffle=True, seed=3,
                            class_weight=w, epoch=epoch)[i]
        assert len(batch) == len(want) == (3 if weighted else 2)
        for a, b in zip(batch, want):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)


def test_class_weights_become_sample_weights():
    labels = np.array([0] * 30 + [1] * 10)
    w = balanced_class_weight(labels, 2)
    assert w == {0: pytest.approx(40 / 60), 1: pytest.approx(2.0)}
    ds = ImageBatches(np.zeros((40, 8, 8, 3), np.uint8), labels, 2, batch_size=40, class_weight=w)
    x, y, sw = ds[0]
    assert sw[0] == pytest.approx(40 / 60) and sw[-1] == pytest.approx(2.0)


def test_run_and_cache_files_follow_the_umask(tmp_path):
    from smallvision._io import write_json_atomic
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert (os.stat(tmp_path / "x.json").st_mode & 0o777) == 0o644
