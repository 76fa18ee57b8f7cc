"""Faults: a full disk while writing the cache or a checkpoint, kill -9 while decoding, two
trainings sharing one cache, model files that would run code. Nothing half-written is read
back as valid, and running the same command again repairs or recomputes."""
import os
import pickle
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from smallvision import api
from smallvision.data.cache import DecodeCache
from smallvision.data.decode import DecodeSpec
from smallvision.data.imagefile import read_image
from smallvision.errors import SmallvisionError
from smallvision.runs import Run
from conftest import make_folder

SPEC = DecodeSpec(80, 80)


def smallvision(*args, file_limit=None, wait=True):
    """Run the CLI in a child process; ``file_limit`` caps the size of any file it writes (a full disk)."""
    def limit():
        if file_limit:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the cap fail with EFBIG instead
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))
    cmd = [sys.executable, "-m", "smallvision", *map(str, args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=limit)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def assert_cache_is_true(data, shas_paths):
    cache = DecodeCache(SPEC)
    for sha, path in shas_paths:
        np.testing.assert_array_equal(cache.images([sha])[0], read_image(data / path, SPEC)[0])


def index_of(data):
    from smallvision.data.scan import scan
    return [(e.sha256, e.path) for e in scan(data, progress=False).entries]


@pytest.mark.slow
def test_disk_full_while_writing_the_cache(tmp_path, isolated_cache):
    data = make_folder(tmp_path / "d", per_class=20)
    code, _, err = smallvision("scan", data, "--image-size", "80", file_limit=200_000)
    assert code == 2 and "cannot write the decode cache" in err and "Traceback" not in err
    kept = DecodeCache(SPEC)  # whole rows written before the disk filled are kept, and are right
    assert 0 <= len(kept) < 40
    assert_cache_is_true(data, [(sha, p) for sha, p in index_of(data) if sha in kept])
    code, _, err = smallvision("scan", data, "--image-size", "80")
    assert code == 0, err
    assert len(DecodeCache(SPEC)) == 40
    assert_cache_is_true(data, index_of(data))


@pytest.mark.slow
def test_disk_full_while_writing_a_checkpoint(tmp_path):
    data = make_folder(tmp_path / "d", per_class=16)
    smallvision("scan", data, "--image-size", "80")  # the cache fits; the 8 MB checkpoint will not
    out = tmp_path / "runs"
    code, _, err = smallvision("train", data, "--image-size", "80", "--epochs", "2", "--out", out, "--quiet",
                               file_limit=3_000_000)
    assert code == 2 and "cannot write the run folder" in err and "--resume" in err, err[-2000:]
    [run_dir] = list(out.iterdir())
    assert not [n for n in os.listdir(run_dir / "checkpoint") if n.endswith(".keras")]
    run = api.resume(run_dir, verbose=0, progress=False)
    assert run.status.status == "finished" and len(run.read_history()) == 2


@pytest.mark.slow
def test_kill_9_while_decoding(tmp_path, isolated_cache):
    data = make_folder(tmp_path / "d", per_class=150, size=400)
    proc = smallvision("scan", data, "--image-size", "80", wait=False)
    folder = DecodeCache(SPEC).dir
    deadline = time.time() + 120
    while time.time() < deadline:
        tmp = [n for n in os.listdir(folder)] if os.path.isdir(folder) else []
        if any(n.startswith(".tmp-") and os.path.getsize(os.path.join(folder, n)) > 0 for n in tmp):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(DecodeCache(SPEC)) == 0  # the killed writer never committed its shard
    code, _, err = smallvision("scan", data, "--image-size", "80")
    assert code == 0, err
    assert len(DecodeCache(SPEC)) == 300
    assert_cache_is_true(data, index_of(data)[::37])


@pytest.mark.slow
def test_two_trainings_share_one_cache(tmp_path, isolated_cache):
    data = make_folder(tmp_path / "d", per_class=16)
    procs = [smallvision("train", data, "--image-size", "80", "--epochs", "1", "--out", tmp_path / f"runs{i}",
                         "--seed", str(i), "--quiet", wait=False) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    for i in range(2):
        [run_dir] = list((tmp_path / f"runs{i}").iterdir())
        assert Run.open(run_dir).status.status == "finished"
    assert len(DecodeCache(SPEC)) == 32
    assert_cache_is_true(data, index_of(data))


def test_model_files_that_would_run_code_are_refused(tmp_path):
    import keras
    inputs = keras.Input((80, 80, 3))
    outputs = keras.layers.Dense(1)(keras.layers.Lambda(lambda t: t * 2)(keras.layers.Flatten()(inputs)))
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")
    image = tmp_path / "x.png"
    from PIL import Image
    Image.new("RGB", (80, 80)).save(image)
    with pytest.raises(SmallvisionError, match="cannot load the model"):
        api.predict(tmp_path / "lambda.keras", [image])
    (tmp_path / "pickled.keras").write_bytes(pickle.dumps({"not": "a model"}))
    with pytest.raises(SmallvisionError, match="pickled.keras: cannot load the model"):
        api.predict(tmp_path / "pickled.keras", [image])
