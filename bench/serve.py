"""`smallvision serve` under load, on loopback only, bounded in count and time (issue #12):
1, 4 and 16 concurrent clients posting real test photos (raw JPEG bodies) — images/s, p50/p95
latency, errors — beside the model alone (issue #27: the same model, opened as serve opens it,
batched, no HTTP, no decoding); 2,000 requests at 16 clients, twice, with the server's resident memory before
and after each; then the bad-input list interleaved with good requests (every bad one must get its 4xx,
every good one 200).

    python bench/serve.py [--run RUN] [--requests 200] [--cache DIR]

Without --run it trains a `features` run (EfficientNet-Lite0) on the shared photos first. The
server is a separate process (`python -m smallvision serve RUN --port P`); the clients are one
asyncio process beside it on the same 2 cores. Written to bench/results/serve.json.
"""
import argparse
import asyncio
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _common import DATA, machine, need_data, record


def cpu_s(pid):
    """User + system CPU seconds of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(url, photos, clients, requests, limit_s=120):
    import httpx
    latencies, errors, done = [], 0, 0
    start = time.perf_counter()

    async def client(k, http):
        nonlocal errors, done
        i = k
        while done < requests and time.perf_counter() - start < limit_s:
            done += 1
            t = time.perf_counter()
            try:
                r = await http.post(url + "/predict", content=photos[i % len(photos)],
                                    headers={"content-type": "image/jpeg"})
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t)
            errors += not ok
            i += clients

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*[client(k, http) for k in range(clients)])
    seconds = time.perf_counter() - start
    latencies.sort()
    return dict(clients=clients, requests=len(latencies), seconds=round(seconds, 2),
                images_per_s=round(len(latencies) / seconds, 1),
                p50_ms=round(1000 * statistics.median(latencies), 1),
                p95_ms=round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 1), errors=errors)


def model_alone(run, photos, repeats=3):
    """Images/s of the model the server runs, opened as it opens it, in this process (the server
    idle beside it): batches of 32 already decoded photos, no HTTP, no decoding; median of 3."""
    import numpy as np

    from smallvision.data.decode import decode_bytes
    from smallvision.inference import open_for_classifying
    from smallvision.runtime import run_batches
    opened, runner, _ = open_for_classifying(run)
    images = np.stack([decode_bytes(b, opened.spec)[0] for b in photos])
    run_batches(runner, images[:32])
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        opened.outputs(run_batches(runner, images, 32))
        times.append(time.perf_counter() - t)
    return round(len(images) / statistics.median(times), 1)


def bad_inputs(good):
    from PIL import Image
    bomb = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(bomb, "PNG")
    return [("not an image", b"hello", "image/jpeg", 400), ("truncated", good[: len(good) // 2], "image/jpeg", 400),
            ("empty body", b"", "image/jpeg", 400), ("decompression bomb", bomb.getvalue(), "image/png", 400),
            ("over the size limit", b"\xff" * (33 * 2 ** 20), "image/jpeg", 413),
            ("wrong content type", good, "text/plain", 415)]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--run")
    p.add_argument("--requests", type=int, default=200, help="per concurrency level")
    p.add_argument("--cache")
    a = p.parse_args()
    need_data()
    tmp = tempfile.mkdtemp(prefix="sv-bench-serve-")
    os.environ["SMALLVISION_CACHE"] = a.cache or os.path.join(tmp, "cache")
    import httpx
    if a.run is None:
        from smallvision import api
        a.run = api.train(str(DATA), "features", out=os.path.join(tmp, "runs"), verbose=0, progress=False).path
    photos = [f.read_bytes() for f in sorted((DATA / "test" / "cats").iterdir())[:100] +
              sorted((DATA / "test" / "dogs").iterdir())[:100]]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "smallvision", "serve", a.run, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        t = time.perf_counter()
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.25)
            if server.poll() is not None or time.perf_counter() - t > 300:
                raise SystemExit(f"the server did not start: {server.stderr.read()[-2000:]}")
        result = dict(benchmark="smallvision serve on loopback", machine=machine(), run=os.path.basename(a.run),
                      startup_seconds=round(time.perf_counter() - t, 1), levels=[])
        asyncio.run(load(url, photos, 4, 40))  # warm
        for clients in (1, 4, 16):
            server_cpu, client_cpu = cpu_s(server.pid), time.process_time()
            level = asyncio.run(load(url, photos, clients, a.requests))
            level["server_cpu_ms_per_image"] = round(1000 * (cpu_s(server.pid) - server_cpu) / level["requests"], 1)
            level["client_cpu_ms_per_image"] = round(1000 * (time.process_time() - client_cpu) / level["requests"], 1)
            result["levels"].append(level)
            print(level, flush=True)
        soaks = []  # twice: growth that stops after the first 2,000 is warm-up (allocator arenas), not a leak
        for _ in range(2):
            before = rss_mb(server.pid)
            soak = asyncio.run(load(url, photos, 16, 2000, limit_s=600))
            after = rss_mb(server.pid)
            soaks.append(dict(soak, rss_before_mb=round(before, 1), rss_after_mb=round(after, 1),
                              growth_mb=round(after - before, 1)))
            print("2,000 requests:", soaks[-1], flush=True)
        result["soak"], result["soak_again"] = soaks
        answers = []
        for what, body, kind, status in bad_inputs(photos[0]):
            r = httpx.post(url + "/predict", content=body, headers={"content-type": kind}, timeout=60)
            g = httpx.post(url + "/predict", content=photos[1], headers={"content-type": "image/jpeg"}, timeout=60)
            answers.append(dict(input=what, expected=status, status=r.status_code, error=r.json().get("error"),
                                next_good=g.status_code))
        for path in ("/nowhere", "/../etc/passwd"):
            r = httpx.get(url + path)
            answers.append(dict(input=f"GET {path}", expected=404, status=r.status_code, error=r.json().get("error"),
                                next_good=httpx.post(url + "/predict", content=photos[1],
                                                     headers={"content-type": "image/jpeg"}).status_code))
        result["bad_input"] = answers
        for row in answers:
            print(row, flush=True)
        result["model_alone_images_per_s"] = model_alone(a.run, photos)
        result["model_alone_cpu_ms_per_image"] = round(1000 * 2 / result["model_alone_images_per_s"], 1)  # 2 cores busy
        one, sixteen = result["levels"][0], result["levels"][-1]
        result["goals"] = {
            "16 clients >= 90 % of the model alone (images/s)": round(sixteen["images_per_s"] /
                                                                     result["model_alone_images_per_s"], 3),
            "16 clients / 1 client (images/s)": round(sixteen["images_per_s"] / one["images_per_s"], 2),
            "p95 at 16 clients < 300 ms": sixteen["p95_ms"],
            "errors": sum(lv["errors"] for lv in result["levels"]) + sum(s["errors"] for s in soaks),
            "memory growth over 2,000 requests < 50 MB": [s["growth_mb"] for s in soaks],
            "every bad input its 4xx, every next good 200": all(r["status"] == r["expected"] and r["next_good"] == 200
                                                                for r in answers),
        }
        print(result["goals"], flush=True)
        record("serve", result)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
