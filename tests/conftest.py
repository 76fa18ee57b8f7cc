import os
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# a finished run's model.onnx costs a conversion (~5-8 s) per run: the suite's many small runs skip
# it (their first predict writes it); test_deploy.py trains with it, as outside the suite
os.environ.setdefault("SMALLVISION_RUN_ONNX", "0")

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "cats_vs_dogs_small"


MAX_WORKERS = 4  # each pytest-xdist worker imports TensorFlow (~1 GB) and trains with every core


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (pyproject's addopts): one worker per core, at most :data:`MAX_WORKERS`."""
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def shared_cache_dir(tmp_path_factory):
    """The session's one warm cache (decodes, features, views, ONNX exports). The caches are keyed
    by content and append-only, so tests share it as two runs do; a test that counts what a cache
    holds asks for ``isolated_cache`` instead."""
    path = tmp_path_factory.getbasetemp() / "shared-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(autouse=True)
def warm_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SMALLVISION_CACHE", str(shared_cache_dir(tmp_path_factory)))


@pytest.fixture
def isolated_cache(warm_cache, tmp_path, monkeypatch):
    """A cold cache of this test's own (for a test that counts what the cache holds)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SMALLVISION_CACHE", str(cache))
    return cache


def shape_image(kind, size, rng):
    """A synthetic photo: a bright disc (kind 0) or a bright bar (kind 1) on noise (make_folder: bars, discs)."""
    h = w = size
    yy, xx = np.mgrid[0:h, 0:w]
    img = rng.integers(0, 90, size=(h, w, 3)).astype(np.uint8)
    cy, cx = rng.integers(h // 3, 2 * h // 3, size=2)
    if kind == 0:
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < (h // 5) ** 2
    else:
        mask = (abs(yy - cy) < h // 10) & (abs(xx - cx) < w // 3)
    img[mask] = rng.integers(180, 255, size=3).astype(np.uint8)
    return img


def make_folder(root, classes=("bars", "discs"), per_class=12, size=96, splits=None, fmt="JPEG", seed=0):
    """Write a small class-folder image set; with ``splits`` ({name: per_class}), the split layout."""
    rng = np.random.default_rng(seed)
    root = pathlib.Path(root)
    layout = [(s, n) for s, n in splits.items()] if splits else [(None, per_class)]
    k = 0
    for split, n in layout:
        for ci, c in enumerate(classes):
            d = root / split / c if split else root / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                ext = "jpg" if fmt == "JPEG" else fmt.lower()
                Image.fromarray(shape_image((ci + 1) % 2, size, rng)).save(d / f"{c}.{k}.{ext}", fmt)
                k += 1
    return root


@pytest.fixture
def tiny_data(tmp_path):
    """Two classes, 16 JPEGs each, no split folders."""
    return make_folder(tmp_path / "tiny", per_class=16)


@pytest.fixture
def shared_subset(tmp_path):
    """A small chapter-layout subset of the shared dogs-vs-cats photos, as symlinks (nothing copied)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs the shared dogs-vs-cats photos at {SHARED_DATA} (absent here)")
    root = tmp_path / "cvd"
    take = {"train": 24, "validation": 8, "test": 8}
    for split, n in take.items():
        for c in ("cats", "dogs"):
            d = root / split / c
            d.mkdir(parents=True)
            for f in sorted((SHARED_DATA / split / c).iterdir())[:n]:
                (d / f.name).symlink_to(f)
    return root


def headless_chromium():
    """A started headless Chromium (selenium), or the test skips saying what is missing (fails
    instead when SMALLVISION_REQUIRE_BROWSER is set, as in CI)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver") or (os.path.isfile("/usr/bin/chromedriver") and "/usr/bin/chromedriver")
    why = None
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        why = "selenium is not installed (pip install '.[test]')"
    if why is None and (not chromium or not driver):
        why = "headless Chromium is not installed (Debian: apt-get install chromium chromium-driver)"
    if why:
        if os.environ.get("SMALLVISION_REQUIRE_BROWSER"):
            pytest.fail(f"SMALLVISION_REQUIRE_BROWSER is set but {why}")
        pytest.skip(why)
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=opts)


def tiny_run(tmp_path_factory, name, strategy, run_onnx=False, **options):
    """A one-epoch ``strategy`` run on a fresh 2-class folder at 64 px, on the session's warm
    cache (for module-scoped fixtures, set up before the per-test one); ``run_onnx``: the run
    writes its model.onnx when it finishes, as outside the suite. Returns (run, data folder, root)."""
    from smallvision import api
    root = tmp_path_factory.mktemp(name)
    data = make_folder(root / "data", per_class=16)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SMALLVISION_CACHE", str(shared_cache_dir(tmp_path_factory)))
        mp.setenv("SMALLVISION_RUN_ONNX", "1" if run_onnx else "0")
        run = api.train(data, strategy, out=root / "runs", epochs=1, image_size=64, head="gap",
                        split="0.5,0.25,0.25", verbose=0, progress=False, **options)
    return run, data, root
