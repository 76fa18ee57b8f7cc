"""data get: download from a local HTTP server (ranges, a dropped connection, a wrong checksum),
or read a local archive or folder; broken photos are dropped and the chapter's split written."""
import hashlib
import http.server
import io
import os
import threading
import zipfile

import numpy as np
import pytest
from PIL import Image

from smallvision.data import fetch
from smallvision.data.scan import scan
from smallvision.errors import SmallvisionError
from conftest import shape_image

SIZES = (("train", 3), ("validation", 2), ("test", 2))


def jpeg(seed):
    buf = io.BytesIO()
    Image.fromarray(shape_image(seed % 2, 64, np.random.default_rng(seed))).save(buf, "JPEG")
    return buf.getvalue()


def petimages_zip(per_class=9, broken=(("Cat", 2), ("Dog", 0))):
    """A small PetImages-style archive: Cat/<n>.jpg, Dog/<n>.jpg, Thumbs.db, some broken photos."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for cls in ("Cat", "Dog"):
            for n in range(per_class):
                data = jpeg(n + (100 if cls == "Dog" else 0))
                if (cls, n) in broken:
                    data = data[: len(data) // 3]  # a truncated photo, as in the real archive
                z.writestr(f"PetImages/{cls}/{n}.jpg", data)
            z.writestr(f"PetImages/{cls}/Thumbs.db", b"\0" * 100)
        z.writestr("readme[1].txt", "test archive")
    return buf.getvalue()


class Server:
    """Serves one archive on 127.0.0.1 with HTTP ranges; can drop the first transfer halfway."""

    def __init__(self, payload, drop_first=False):
        self.payload, self.drop_first, self.requests = payload, drop_first, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                outer.requests.append(rng)
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                body = outer.payload[start:]
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body)))
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(outer.payload) - 1}/{len(outer.payload)}")
                self.end_headers()
                if outer.drop_first and len(outer.requests) == 1:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)  # the connection drops mid-transfer
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/kagglecatsanddogs_test.zip"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def check_result(result, root):
    folder = root / "cats_vs_dogs_small"
    assert result["folder"] == str(folder)
    index = scan(folder, progress=False)
    assert index.counts() == {"train": {"cats": 3, "dogs": 3}, "validation": {"cats": 2, "dogs": 2},
                              "test": {"cats": 2, "dogs": 2}}
    assert not index.rejects
    # by number, a broken photo replaced by the next: cats 0,1,3 | 4,5 | 6,7 ; dogs 1,2,3 | 4,5 | 6,7
    assert sorted(os.listdir(folder / "train" / "cats")) == ["cat.0.jpg", "cat.1.jpg", "cat.3.jpg"]
    assert sorted(os.listdir(folder / "train" / "dogs")) == ["dog.1.jpg", "dog.2.jpg", "dog.3.jpg"]
    assert sorted(n for n, _ in result["dropped"]) == ["PetImages/Cat/2.jpg", "PetImages/Dog/0.jpg"]
    manifest = (folder / "MANIFEST.tsv").read_text().splitlines()
    assert len(manifest) == 1 + 14 and manifest[0].startswith("split\tclass\tfilename\tsource\tsha256")
    assert "truncated" in (folder / "DROPPED.tsv").read_text()


def test_download_resumes_after_a_dropped_connection(tmp_path):
    payload = petimages_zip()
    with Server(payload, drop_first=True) as server:
        result = fetch.get_cats_vs_dogs(tmp_path, url=server.url, sha256=hashlib.sha256(payload).hexdigest(),
                                        sizes=SIZES, progress=False)
    assert server.requests[0] is None and server.requests[1] == f"bytes={len(payload) // 2}-"
    check_result(result, tmp_path)
    assert (tmp_path / ".download" / "kagglecatsanddogs_test.zip").read_bytes() == payload


def test_a_wrong_checksum_is_refused_and_nothing_is_written(tmp_path):
    with Server(petimages_zip()) as server:
        with pytest.raises(SmallvisionError, match="does not match the expected"):
            fetch.get_cats_vs_dogs(tmp_path, url=server.url, sha256="0" * 64, sizes=SIZES, progress=False)
    assert not (tmp_path / "cats_vs_dogs_small").exists()
    assert not (tmp_path / ".download" / "kagglecatsanddogs_test.zip").exists()


def test_a_missing_file_on_the_server_is_one_line(tmp_path):
    with Server(b"") as server:
        server.httpd.RequestHandlerClass.do_GET = lambda self: self.send_error(404)
        with pytest.raises(SmallvisionError, match="HTTP 404"):
            fetch.get_cats_vs_dogs(tmp_path, url=server.url, sizes=SIZES, progress=False)


def test_from_a_local_archive_or_folder(tmp_path):
    archive = tmp_path / "kagglecatsanddogs_local.zip"
    archive.write_bytes(petimages_zip())
    check_result(fetch.get_cats_vs_dogs(tmp_path / "a", source=str(archive), sizes=SIZES, progress=False),
                 tmp_path / "a")
    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp_path / "extracted")
    check_result(fetch.get_cats_vs_dogs(tmp_path / "b", source=str(tmp_path / "extracted"), sizes=SIZES,
                                        progress=False), tmp_path / "b")


def test_kaggle_competition_zip_with_train_zip_inside(tmp_path):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        for cls in ("cat", "dog"):
            for n in range(8):
                z.writestr(f"train/{cls}.{n}.jpg", jpeg(n))
    outer = tmp_path / "dogs-vs-cats.zip"
    with zipfile.ZipFile(outer, "w") as z:
        z.writestr("train.zip", inner.getvalue())
        z.writestr("test1.zip", b"")
    result = fetch.get_cats_vs_dogs(tmp_path, source=str(outer), sizes=SIZES, progress=False)
    assert sorted(os.listdir(tmp_path / "cats_vs_dogs_small" / "test" / "dogs")) == ["dog.5.jpg", "dog.6.jpg"]
    assert result["dropped"] == []


def test_too_few_good_photos(tmp_path):
    archive = tmp_path / "small.zip"
    archive.write_bytes(petimages_zip(per_class=5))
    with pytest.raises(SmallvisionError, match="only 4 usable cats photos; the split needs 7"):
        fetch.get_cats_vs_dogs(tmp_path, source=str(archive), sizes=SIZES, progress=False)


def test_known_archives_are_pinned():
    old = fetch.KNOWN_ARCHIVES["kagglecatsanddogs_3367a.zip"]
    assert old["bytes"] == 824_894_548 and old["sha256"].startswith("f9553e42")
    assert fetch.OFFICIAL_URL.startswith("https://download.microsoft.com/") and \
        fetch.OFFICIAL_URL.endswith("kagglecatsanddogs_5340.zip")


def test_an_interrupted_download_resumes_in_a_later_run(tmp_path):
    payload = petimages_zip()
    part = tmp_path / ".download" / "kagglecatsanddogs_test.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(payload[:1000])  # what a killed earlier run left behind
    with Server(payload) as server:
        check_result(fetch.get_cats_vs_dogs(tmp_path, url=server.url, sizes=SIZES, progress=False), tmp_path)
    assert server.requests == ["bytes=1000-"]
    assert not part.exists()


def test_archive_member_names_never_choose_where_files_go(tmp_path):
    """Zip-slip: members named ../../x or /x are read as photos (their number and class), but
    every file is written under the target folder with a name smallvision makes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n in range(7):
            z.writestr(f"../../PetImages/Cat/{n}.jpg", jpeg(n))
            z.writestr(f"/PetImages/Dog/{n}.jpg", jpeg(n + 100))  # an absolute member name
        z.writestr("../../escaped.txt", "x")
    (tmp_path / "evil.zip").write_bytes(buf.getvalue())
    to = tmp_path / "a" / "b" / "data"
    r = fetch.get_cats_vs_dogs(to, source=tmp_path / "evil.zip", sizes=SIZES, progress=False)
    written = {os.path.relpath(os.path.join(d, f), tmp_path) for d, _, fs in os.walk(tmp_path) for f in fs}
    assert all(p.startswith(os.path.join("a", "b", "data")) or p == "evil.zip" for p in written), written
    assert sorted(os.listdir(os.path.join(r["folder"], "train", "cats"))) == ["cat.0.jpg", "cat.1.jpg", "cat.2.jpg"]


def test_a_zip_bomb_member_is_refused_before_it_is_inflated(tmp_path, monkeypatch):
    """zipfile stops at a member's declared size, so checking that size bounds what is inflated."""
    monkeypatch.setattr(fetch, "MAX_FILE_BYTES", 50_000)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for n in range(9):
            cat = b"\0" * 10_000_000 if n == 2 else jpeg(n)  # cat 2: 10 MB of zeros, ~10 kB compressed
            z.writestr(f"PetImages/Cat/{n}.jpg", cat)
            z.writestr(f"PetImages/Dog/{n}.jpg", jpeg(n + 100))
    (tmp_path / "bomb.zip").write_bytes(buf.getvalue())
    r = fetch.get_cats_vs_dogs(tmp_path / "data", source=tmp_path / "bomb.zip", sizes=SIZES, progress=False)
    assert ("PetImages/Cat/2.jpg", "too large for an image (10,000,000 bytes inflated; the limit is 50,000)") \
        in r["dropped"]
    monkeypatch.setattr(fetch, "MAX_INNER_ZIP_BYTES", 1000)
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w") as z:
        z.writestr("train.zip", buf.getvalue())
    (tmp_path / "kaggle.zip").write_bytes(outer.getvalue())
    with pytest.raises(SmallvisionError, match="would inflate to"):
        fetch.get_cats_vs_dogs(tmp_path / "data2", source=tmp_path / "kaggle.zip", sizes=SIZES, progress=False)
