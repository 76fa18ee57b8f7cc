"""``serve``: the HTTP API answers like ``predict``, batches concurrent requests, refuses every
kind of bad input with a one-line 4xx and keeps serving, checks the token, and its page works
in a real browser against a real server on loopback."""
import asyncio
import io
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from smallvision import api
from conftest import SHARED_DATA, headless_chromium, shared_cache_dir, tiny_run

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    run, data, root = tiny_run(tmp_path_factory, "serve", "features")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SMALLVISION_CACHE", str(shared_cache_dir(tmp_path_factory)))
        app = api.make_app(run.path, max_bytes=200_000, window=0.05)
    files = sorted((data / "bars").iterdir())[:2] + sorted((data / "discs").iterdir())[:1]
    return dict(run=run, data=data, app=app, files=files, root=root, cache=shared_cache_dir(tmp_path_factory))


def _jpeg(size=(40, 30)):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, size + (3,), np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_predict_answers_like_the_predict_verb(served):
    client = TestClient(served["app"])
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["classes"] == ["bars", "discs"] and health["input"] == [64, 64]
    expected = {os.path.basename(r["path"]): r for r in api.predict(served["run"].path, served["files"],
                                                                     progress=False)}
    r = client.post("/predict", files=[("file", (p.name, p.read_bytes(), "image/jpeg")) for p in served["files"]])
    assert r.status_code == 200, r.text
    got = r.json()["predictions"]
    assert [g["name"] for g in got] == [p.name for p in served["files"]]
    for g in got:
        assert g["class"] == expected[g["name"]]["class"]
        assert g["probabilities"]["discs"] == pytest.approx(expected[g["name"]]["probabilities"]["discs"], abs=1e-4)
    raw = client.post("/predict", content=served["files"][2].read_bytes(), headers={"content-type": "image/jpeg"})
    assert raw.status_code == 200 and raw.json()["predictions"][0]["class"] == expected[served["files"][2].name]["class"]
    png = client.post("/heatmap", files={"file": ("x.jpg", served["files"][0].read_bytes(), "image/jpeg")})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (2 * 64 + 8, 64) or Image.open(io.BytesIO(png.content)).width > 64


def test_bad_input_gets_a_4xx_and_the_next_good_request_is_answered(served, tmp_path):
    client = TestClient(served["app"])
    good = served["files"][0].read_bytes()
    truncated = good[: len(good) // 2]
    bomb = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(bomb, "PNG")  # 144 M pixels in a few kB
    written = lambda: {p: os.stat(p).st_mtime_ns for d in ("root", "cache") for p in served[d].rglob("*")}
    before = written()
    cases = [
        ("not an image", dict(content=b"hello, I am text", headers={"content-type": "image/jpeg"}), 400,
         "not an image"),
        ("truncated", dict(files={"file": ("t.jpg", truncated, "image/jpeg")}), 400, "t.jpg: "),
        ("empty body", dict(content=b"", headers={"content-type": "image/jpeg"}), 400, "empty request body"),
        ("bomb", dict(content=bomb.getvalue(), headers={"content-type": "image/png"}), 400,
         "decompression bomb refused"),
        ("too large", dict(content=b"\xff" * 300_000, headers={"content-type": "image/jpeg"}), 413,
         "request body over 200000 bytes"),
        ("wrong type", dict(content=good, headers={"content-type": "text/plain"}), 415, "content type 'text/plain'"),
        ("form without file", dict(files={"x": (None, b"1")}), 400, "the form has no file field"),
        ("urlencoded form", dict(data={"x": "1"}), 415, "application/x-www-form-urlencoded"),
    ]
    for what, kwargs, status, words in cases:
        r = client.post("/predict", **kwargs)
        assert r.status_code == status, (what, r.status_code, r.text)
        message = r.json()["error"]
        assert "\n" not in message and (words is None or words in message), (what, message)
        ok = client.post("/predict", content=good, headers={"content-type": "image/jpeg"})
        assert ok.status_code == 200, (what, ok.text)
    assert client.get("/etc/passwd").status_code == 404 and client.get("/../../etc/passwd").status_code == 404
    assert client.get("/nowhere").json()["error"] == "GET /nowhere: no such route"
    assert client.get("/predict").status_code == 405
    # nothing was written: the run folder and the cache are as they were
    assert written() == before


def test_multipart_is_parsed_in_memory_byte_for_byte(served, tmp_path, monkeypatch):
    import httpx
    import tempfile

    from smallvision.serve import form_files
    blobs = [os.urandom(3 * 2 ** 20), b"\r\n--boundary\r\n\r\n" * 1000, served["files"][0].read_bytes()]
    request = httpx.Request("POST", "http://x/predict", files=[("file", (f"f{k}", b, "image/jpeg"))
                                                               for k, b in enumerate(blobs)] + [("note", (None, b"x"))])
    got = form_files(request.headers["content-type"], request.read())
    assert [name for name, _ in got] == ["f0", "f1", "f2"] and [b for _, b in got] == blobs
    many = httpx.Request("POST", "http://x/predict", files=[("file", (f"f{k}", b"x", "image/jpeg")) for k in range(33)])
    with pytest.raises(Exception, match="33 images in one request; at most 32"):
        form_files(many.headers["content-type"], many.read())
    with pytest.raises(Exception, match="cannot read the multipart form"):
        form_files("multipart/form-data; boundary=nope", request.read())
    # a 3 MB upload through the app leaves no temporary file behind (nothing is spooled to disk)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    app = api.make_app(served["run"].path, service=served["app"].state.service)  # the default 32 MB limit
    r = TestClient(app).post("/predict", files={"file": ("big.jpg", blobs[0], "image/jpeg")})
    assert r.status_code == 400 and "big.jpg: not an image" in r.json()["error"]
    assert list(tmp_path.iterdir()) == []


def test_a_token_is_required_when_set_and_compared_whole(served):
    app = api.make_app(served["run"].path, token="s3cret", service=served["app"].state.service)
    client = TestClient(app)
    body = dict(content=served["files"][0].read_bytes(), headers={"content-type": "image/jpeg"})
    assert client.post("/predict", **body).status_code == 401
    for wrong in ("Bearer s3cre", "Bearer s3cret ", "Bearer S3CRET", "s3cret", "Basic s3cret"):
        r = client.post("/predict", content=body["content"], headers={**body["headers"], "authorization": wrong})
        assert r.status_code == 401 and "Authorization: Bearer" in r.json()["error"], wrong
    r = client.post("/predict", content=body["content"], headers={**body["headers"], "authorization": "Bearer s3cret"})
    assert r.status_code == 200
    assert client.get("/health").status_code == 401
    assert client.get("/health", headers={"authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/").status_code == 200  # the page itself asks for the token


def test_concurrent_requests_are_classified_together(served):
    import httpx
    app = served["app"]
    body = served["files"][0].read_bytes()

    async def many():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await asyncio.gather(*[client.post("/predict", content=body, headers={"content-type": "image/jpeg"})
                                          for _ in range(12)])

    app.state.batcher.batches.clear()
    answers = asyncio.run(many())
    assert all(a.status_code == 200 for a in answers)
    assert len({a.json()["predictions"][0]["probability"] for a in answers}) == 1
    assert sum(app.state.batcher.batches) == 12 and max(app.state.batcher.batches) > 1


def test_an_export_is_served_without_its_heatmap(served, tmp_path):
    out = tmp_path / "onnx"
    api.export(served["run"].path, out=out)
    client = TestClient(api.make_app(str(out)))
    assert client.get("/health").json()["heatmap"] is False
    r = client.post("/predict", content=served["files"][0].read_bytes(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 200
    h = client.post("/heatmap", content=served["files"][0].read_bytes(), headers={"content-type": "image/jpeg"})
    assert h.status_code == 404 and "no heatmap for an exported model" in h.json()["error"]


def test_binding_beyond_loopback_without_a_token_warns(served, monkeypatch, capsys):
    import uvicorn
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    api.serve(served["run"].path, host="0.0.0.0", port=0)
    assert "warning: serving on 0.0.0.0 without --token" in capsys.readouterr().err
    api.serve(served["run"].path, host="127.0.0.1", port=0)
    assert "warning" not in capsys.readouterr().err and [c["host"] for c in calls] == ["0.0.0.0", "127.0.0.1"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_page_classifies_an_uploaded_photo_in_a_real_browser(served, tmp_path):
    photo = served["files"][2]
    if SHARED_DATA.is_dir():  # a real photo when the shared ones are here
        photo = sorted((SHARED_DATA / "test" / "dogs").iterdir())[0]
    expected = api.predict(served["run"].path, [photo], progress=False)[0]["class"]
    port = _free_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "SMALLVISION_CACHE": str(served["cache"])}
    server = subprocess.Popen([sys.executable, "-m", "smallvision", "serve", served["run"].path, "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        import httpx
        for _ in range(240):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
            assert server.poll() is None, server.stderr.read()[-2000:]
        browser = headless_chromium()
        try:
            from selenium.webdriver.common.by import By
            from selenium.webdriver.support.ui import WebDriverWait
            browser.get(f"http://127.0.0.1:{port}/")
            browser.find_element(By.ID, "file").send_keys(str(photo))
            WebDriverWait(browser, 60).until(lambda b: b.execute_script(
                "const i = document.getElementById('heatmap'); return i.complete && i.naturalWidth > 0"))
            shown = browser.execute_script("return document.getElementById('answer').dataset.class")
            assert shown == expected
            bars = browser.execute_script("return document.querySelectorAll('#bars .bar').length")
            assert bars == 2 and browser.execute_script("return document.getElementById('error').textContent") == ""
        finally:
            browser.quit()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_page_keeps_hostile_names_as_text(served):
    import copy
    service = copy.copy(served["app"].state.service)
    service.class_names, service.name = ["</script><script>alert(1)</script>", "b"], "<img src=x onerror=alert(1)>"
    page = TestClient(api.make_app(None, service=service)).get("/").text
    assert "</script><script>alert" not in page and "<img src=x" not in page
    assert page.count("</script>") == 1  # the page's own
