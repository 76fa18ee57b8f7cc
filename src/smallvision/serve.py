"""``serve``: a trained model (a run folder, a ``.keras`` file or an export folder) behind an
HTTP API and a small page, on Starlette and uvicorn.

::

    GET  /health     {"status": "ok", "model": ..., "classes": [...], "input": [h, w]}
    POST /predict    one or more images: multipart (any file fields) or a raw image body
                     -> {"predictions": [{"class", "probability", "probabilities"}, ...]}
                     (a run with a novelty: also "novelty" and "unknown", see smallvision.novelty)
    POST /heatmap    one image -> image/png: the image | its Grad-CAM heatmap (Keras models)
    GET  /           a page: pick or drop a photo, see the class, its probability as a bar,
                     and the heatmap

Images are decoded exactly as in training (the scan's decoder, the run's size and crop).
Concurrent requests are classified together (:class:`Batcher`: up to ``max_batch`` images
gathered for ``window`` seconds), so throughput grows with clients; the model is loaded and
warmed once. Bad input never takes the service down: a one-line JSON error with a 4xx status
(400 not an image / truncated / empty / decompression bomb, 413 over ``max_bytes``, 415 a
content type that is not an image or multipart, 404 unknown route, 405 wrong method, 401
without the right ``Authorization: Bearer`` token when one is set — compared in constant
time); nothing is written to disk, and no file of the machine is reachable through it.
"""
import asyncio
import collections
import hmac
import io
import json
import os

import numpy as np

from .errors import SmallvisionError
from .progress import log

MAX_BODY = 32 * 2 ** 20  # bytes per request: a few phone photos
MAX_BATCH = 32
WINDOW = 0.005  # seconds a batch waits for more requests once one has come
LOOPBACK = ("127.0.0.1", "::1", "localhost")


class Batcher:
    """Classify images from many requests together: each request awaits :meth:`submit`; one
    task gathers what is queued (up to ``max_batch`` images, ``window`` seconds after the first)
    and runs ``classify`` on it in a worker thread."""

    def __init__(self, classify, max_batch=MAX_BATCH, window=WINDOW):
        self.classify, self.max_batch, self.window = classify, max_batch, window
        self.batches = collections.deque(maxlen=10_000)  # sizes of the last batches run (tests, benchmark)
        self._loop = self._queue = self._task = None

    async def submit(self, images):
        """``images``: [n, h, w, 3] uint8 -> [n, classes] probabilities."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # the first request (or a test client's new event loop)
            self._loop, self._queue = loop, asyncio.Queue()
            self._task = loop.create_task(self._run(self._queue))
        future = loop.create_future()
        await self._queue.put((images, future))
        return await future

    async def _run(self, queue):
        loop = asyncio.get_running_loop()
        while True:
            items = [await queue.get()]
            deadline = loop.time() + self.window
            while sum(len(i) for i, _ in items) < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            batch = np.concatenate([i for i, _ in items])
            self.batches.append(len(batch))
            try:
                probs = await loop.run_in_executor(None, self.classify, batch)
            except Exception as e:  # the model failed: every waiting request hears it, the loop goes on
                for _, future in items:
                    if not future.done():
                        future.set_exception(e)
                continue
            start = 0
            for images, future in items:
                if not future.done():
                    future.set_result(probs[start:start + len(images)])
                start += len(images)


class Service:
    """The model, opened and warmed once: ``classify(uint8 batch)``, ``heatmap(image)``."""

    def __init__(self, source):
        from .inference import open_for_classifying
        opened, self.runner, self.keras = open_for_classifying(source)  # keras(): loaded on the first heatmap
        self.name = os.path.basename(os.path.normpath(source)) if self.keras is not None else \
            f"{opened.format} export"
        self.class_names, self.spec = list(opened.class_names), opened.spec
        self.novelty = getattr(opened, "novelty", None)
        self.outputs = opened.outputs
        self.classify(np.zeros((1,) + self.spec.shape, np.uint8))  # warm: the first call compiles

    def classify(self, images):
        """``[n, classes]`` probabilities, or with a novelty ``[n, classes + 2]``: then the last two
        columns are the novelty score and whether it is unknown (so that a batch stays one array)."""
        from .runtime import run_batches
        probs, novelty = self.outputs(run_batches(self.runner, images))
        return np.column_stack([probs, np.array(novelty, np.float64).reshape(len(probs), 2)]) if novelty else probs

    def heatmap(self, image):
        """PNG bytes: the image | the image with its Grad-CAM heatmap (for the predicted class)."""
        from .explain.maps import grad_cam, heatmap_canvas
        cam, _, _, _ = grad_cam(self.keras(), image)
        buf = io.BytesIO()
        heatmap_canvas(image, cam, scale=1).save(buf, format="PNG")
        return buf.getvalue()

    def decode(self, data, what):
        from .data.decode import BadImage, decode_bytes
        try:
            return decode_bytes(data, self.spec)[0]
        except BadImage as e:
            raise _Refused(400, f"{what}: {e}") from None

    def row(self, p):
        n = len(self.class_names)
        k = int(np.argmax(p[:n]))
        row = {"class": self.class_names[k], "probability": round(float(p[k]), 5),
               "probabilities": {c: round(float(v), 5) for c, v in zip(self.class_names, p[:n])}}
        if self.novelty is not None:
            row["novelty"], row["unknown"] = round(float(p[n]), 4), bool(p[n + 1])
        return row


def form_files(content_type, data, max_files=MAX_BATCH):
    """[(file name, bytes)] of the file fields of a multipart/form-data body, parsed in memory
    (the standard library's MIME parser: a form parser that spools large parts to temporary
    files would write uploads to disk)."""
    import email.parser
    import email.policy
    try:
        head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + data)
        parts = list(message.iter_parts()) if message.is_multipart() else []
        files = [(part.get_filename(), part.get_payload(decode=True) or b"") for part in parts
                 if part.get_filename() is not None]
    except Exception as e:
        raise _Refused(400, f"cannot read the multipart form ({type(e).__name__})") from None
    if not parts:
        raise _Refused(400, "cannot read the multipart form (no parts: a wrong or missing boundary?)")
    if not files:
        raise _Refused(400, "the form has no file field")
    if len(files) > max_files:
        raise _Refused(413, f"{len(files)} images in one request; at most {max_files}")
    return files


class _Refused(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def make_app(source, token=None, max_bytes=MAX_BODY, max_batch=MAX_BATCH, window=WINDOW, service=None):
    """The Starlette application serving ``source`` (see the module's docstring)."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    service = service or Service(source)
    batcher = Batcher(service.classify, max_batch, window)

    def error(status, message):
        return JSONResponse({"error": message}, status_code=status)

    def authorised(request):
        if token is None:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), f"Bearer {token}".encode())

    async def body(request):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_bytes):
            raise _Refused(413, f"request body over {max_bytes} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise _Refused(413, f"request body over {max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def images_of(request):
        """[(name, bytes)] from a multipart form (every file field) or a raw image body."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        data = await body(request)
        if not data:
            raise _Refused(400, "empty request body: send an image (raw, or as multipart form files)")
        if kind == "multipart/form-data":
            return form_files(request.headers["content-type"], data, max_batch)
        if kind.startswith("image/") or kind == "application/octet-stream":
            return [("body", data)]
        raise _Refused(415, f"content type {kind or 'none'!r}: send an image (image/*) or multipart/form-data")

    async def guarded(request, handler):
        if not authorised(request):
            return error(401, "missing or wrong Authorization: Bearer token")
        try:
            return await handler(request)
        except _Refused as e:
            return error(e.status, str(e))

    async def predict(request):
        async def handle(request):
            files = await images_of(request)
            loop = asyncio.get_running_loop()  # decoding in a worker thread: the loop keeps accepting
            images = np.stack(await loop.run_in_executor(None, lambda: [service.decode(d, n) for n, d in files]))
            probs = await batcher.submit(images)
            return JSONResponse({"predictions": [dict(service.row(p), name=name)
                                                 for (name, _), p in zip(files, probs)]})
        return await guarded(request, handle)

    async def heatmap(request):
        async def handle(request):
            if service.keras is None:
                raise _Refused(404, "no heatmap for an exported model (serve the run folder for one)")
            name, data = (await images_of(request))[0]
            png = await asyncio.get_running_loop().run_in_executor(
                None, lambda: service.heatmap(service.decode(data, name)))
            return Response(png, media_type="image/png")
        return await guarded(request, handle)

    async def health(request):
        if not authorised(request):
            return error(401, "missing or wrong Authorization: Bearer token")
        return JSONResponse({"status": "ok", "model": service.name, "classes": service.class_names,
                             "input": [service.spec.height, service.spec.width],
                             "heatmap": service.keras is not None})

    async def page(request):
        classes = json.dumps(service.class_names).replace("<", "\\u003c")  # a class named "</script>" stays text
        return HTMLResponse(_PAGE.replace("__CLASSES__", classes)
                            .replace("__TOKEN__", json.dumps(token is not None))
                            .replace("__TITLE__", _html(service.name)))

    async def http_error(request, exc):
        reason = {404: "no such route", 405: "method not allowed here"}.get(exc.status_code, exc.detail)
        return error(exc.status_code, f"{request.method} {request.url.path}: {reason}")

    async def crash(request, exc):  # a defect, not the client's fault: say so, keep serving
        return error(500, f"internal error ({type(exc).__name__})")

    routes = [Route("/", page, methods=["GET"]), Route("/health", health, methods=["GET"]),
              Route("/predict", predict, methods=["POST"]), Route("/heatmap", heatmap, methods=["POST"])]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: crash})
    app.state.batcher, app.state.service = batcher, service
    return app


def _html(text):
    import html
    return html.escape(str(text))


def serve(source, host="127.0.0.1", port=8000, token=None, max_bytes=MAX_BODY, progress=True):
    """Serve ``source`` until interrupted (uvicorn). Binding another address than loopback
    without ``token`` prints a warning."""
    try:
        import uvicorn
    except ImportError:
        raise SmallvisionError("serve needs uvicorn and starlette (pip install 'smallvision[serve]')") from None
    if host not in LOOPBACK and token is None:
        log(f"warning: serving on {host} without --token: anyone who can reach this port can use the model")
    app = make_app(source, token=token, max_bytes=max_bytes)
    if progress:
        log(f"serving {app.state.service.name} on http://{host}:{port}/ (classes: "
            f"{', '.join(app.state.service.class_names)}); Ctrl-C stops")
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>smallvision: __TITLE__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;max-width:44rem;margin:2rem auto;padding:0 1rem;color:#222}
#drop{border:2px dashed #888;border-radius:8px;padding:2rem;text-align:center;cursor:pointer}
#drop.over{background:#eef}
.bar{height:1.2rem;background:#4a7;border-radius:3px}
.row{display:flex;gap:.5rem;align-items:center;margin:.2rem 0}.row span{width:8rem}
.track{flex:1;background:#eee;border-radius:3px}
img{max-width:100%;margin-top:1rem}
#error{color:#b00}.unknown{background:#fff3cd;border:1px solid #e0c060;padding:.4em .6em}
</style></head><body>
<h1>__TITLE__</h1>
<p>Classes: <span id="classes"></span></p>
<p id="tokenrow" hidden><label>Token: <input id="token" type="password" autocomplete="off"></label></p>
<div id="drop">Drop a photo here, or <label><u>pick one</u>
<input id="file" type="file" accept="image/*" hidden></label></div>
<p id="error"></p>
<h2 id="answer"></h2>
<p id="unknown" class="unknown" hidden></p>
<div id="bars"></div>
<img id="heatmap" alt="">
<script>
const classes = __CLASSES__, needsToken = __TOKEN__;
document.getElementById("classes").textContent = classes.join(", ");
if (needsToken) document.getElementById("tokenrow").hidden = false;
const drop = document.getElementById("drop"), file = document.getElementById("file");
function headers() {
  const t = document.getElementById("token").value;
  return needsToken ? {"Authorization": "Bearer " + t} : {};
}
async function classify(f) {
  const err = document.getElementById("error"), answer = document.getElementById("answer");
  const bars = document.getElementById("bars"), heat = document.getElementById("heatmap");
  document.getElementById("unknown").hidden = true;
  err.textContent = ""; answer.textContent = "…"; bars.textContent = ""; heat.removeAttribute("src");
  const form = new FormData(); form.append("file", f);
  const r = await fetch("predict", {method: "POST", body: form, headers: headers()});
  const j = await r.json();
  if (!r.ok) { answer.textContent = ""; err.textContent = j.error; return; }
  const p = j.predictions[0];
  answer.textContent = p["class"] + " (" + (100 * p.probability).toFixed(1) + " %)";
  answer.dataset.class = p["class"];
  const unknown = document.getElementById("unknown");
  unknown.hidden = !p.unknown;
  if (p.unknown) unknown.textContent = "This looks unlike anything the model was trained on (novelty " +
    p.novelty.toFixed(3) + "): its answer is a guess.";
  for (const [c, v] of Object.entries(p.probabilities)) {
    const row = document.createElement("div"); row.className = "row";
    const name = document.createElement("span"); name.textContent = c;
    const track = document.createElement("div"); track.className = "track";
    const bar = document.createElement("div"); bar.className = "bar"; bar.style.width = (100 * v) + "%";
    track.appendChild(bar); row.append(name, track); bars.appendChild(row);
  }
  const form2 = new FormData(); form2.append("file", f);
  const h = await fetch("heatmap", {method: "POST", body: form2, headers: headers()});
  if (h.ok) { heat.src = URL.createObjectURL(await h.blob()); heat.alt = "Grad-CAM heatmap"; }
}
file.addEventListener("change", () => file.files[0] && classify(file.files[0]));
drop.addEventListener("dragover", e => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", e => { e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files[0]) classify(e.dataTransfer.files[0]); });
</script></body></html>
"""
