"""Get the chapter's data set: download (resumable, verified) or read a local copy, drop every
file that does not decode, and write the chapter's split with a manifest.

Sources understood (given with ``source=`` / ``--from``, else downloaded from ``url``):

* Microsoft's PetImages archive (``kagglecatsanddogs_*.zip``: ``PetImages/Cat/<n>.jpg``,
  ``PetImages/Dog/<n>.jpg``), as a zip or extracted;
* Kaggle's Dogs vs. Cats ``train.zip`` (``train/cat.<n>.jpg``, ``train/dog.<n>.jpg``), the
  competition zip that contains it, or an extracted folder of such files.

Per class, files are taken in order of their number, and the first ones that decode fully
fill train, validation and test (the chapter: 1,000 / 500 / 1,000; the 2nd edition took
Kaggle numbers 0-999, 1000-1499, 1500-2499 — a broken file is replaced by the next number).
"""
import hashlib
import http.client
import io
import os
import re
import shutil
import time
import urllib.error
import urllib.request
import zipfile

from .._io import sha256_file, write_text_atomic
from ..errors import SmallvisionError
from ..progress import Progress
from .decode import BadImage, decode_bytes
from .imagefile import MAX_FILE_BYTES, read_file
from .scan import VERIFY_SPEC

OFFICIAL_URL = ("https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/"
                "kagglecatsanddogs_5340.zip")
# What is known about the archives. TensorFlow Datasets records the size and sha256 of the
# earlier archive; for the current one only its content is known (12,500 photos per class,
# 1,738 of which lack a JFIF header), so it is checked by counting.
KNOWN_ARCHIVES = {
    "kagglecatsanddogs_3367a.zip": dict(bytes=824_894_548,
                                        sha256="f9553e426bd725354ed3a27e3c6920caadb55c835d1ebd880d2e56d3f1fbb22b",
                                        per_class=12_500),
    "kagglecatsanddogs_5340.zip": dict(bytes=None, sha256=None, per_class=12_500),
}
CHAPTER_SIZES = (("train", 1000), ("validation", 500), ("test", 1000))
MAX_INNER_ZIP_BYTES = 4 * 2 ** 30  # Kaggle's train.zip is 0.54 GB; a zip bomb says it is far larger
CLASSES = {"cat": "cats", "dog": "dogs"}
_PETIMAGES = re.compile(r"(?:^|/)(Cat|Dog)/(\d+)\.jpe?g$", re.IGNORECASE)
_KAGGLE = re.compile(r"(?:^|/)(cat|dog)\.(\d+)\.jpe?g$", re.IGNORECASE)


def download(url, dest, expected_bytes=None, expected_sha256=None, retries=5, progress=True, timeout=60):
    """Download ``url`` to ``dest``, resuming a partial ``dest + '.part'`` with HTTP ranges.

    A dropped connection is retried (up to ``retries`` times, with back-off) from where it
    stopped. The finished file is checked against ``expected_bytes`` / ``expected_sha256``
    when given, and renamed into place only when it passes.

    Returns ``dest``.
    """
    part = dest + ".part"
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    attempt = 0
    while True:
        have = os.path.getsize(part) if os.path.exists(part) else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if have and response.status != 206:  # the server ignored the range: start over
                    have = 0
                length = response.headers.get("Content-Length")
                total = have + int(length) if length is not None else 0
                bar = Progress(f"downloading {os.path.basename(dest)}", total, unit="bytes", enabled=progress)
                bar.done = have
                with open(part, "ab" if have else "wb") as f:
                    while True:
                        block = response.read(1 << 20)
                        if not block:
                            break
                        f.write(block)
                        bar.update(len(block))
                bar.close()
                if total and os.path.getsize(part) < total:
                    raise http.client.IncompleteRead(b"", total - os.path.getsize(part))
            break
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # nothing left to fetch: the part file is complete
                break
            raise SmallvisionError(f"{url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, OSError) as e:
            attempt += 1
            if attempt > retries:
                raise SmallvisionError(f"{url}: download failed after {retries} retries "
                                       f"({getattr(e, 'reason', e)}); run the same command again to resume "
                                       f"from {os.path.getsize(part) if os.path.exists(part) else 0} bytes") from None
            time.sleep(min(2 ** attempt * 0.1, 5))
    verify(part, expected_bytes, expected_sha256, shown_as=dest)
    os.replace(part, dest)
    return dest


def verify(path, expected_bytes=None, expected_sha256=None, shown_as=None):
    """Raise SmallvisionError if the file's size or sha256 differ from what is expected."""
    shown = shown_as or path
    size = os.path.getsize(path)
    if expected_bytes is not None and size != expected_bytes:
        raise SmallvisionError(f"{shown}: expected {expected_bytes:,} bytes, received {size:,}")
    if expected_sha256:
        digest = sha256_file(path)
        if digest != expected_sha256.lower():
            os.replace(path, path + ".bad")  # keep it for inspection, never reuse it
            raise SmallvisionError(f"{shown}: sha256 {digest} does not match the expected {expected_sha256}; "
                                   f"kept as {os.path.basename(path)}.bad")


def _classify(name):
    """Archive member name -> (class folder, number) or None."""
    m = _PETIMAGES.search(name) or _KAGGLE.search(name)
    if not m:
        return None
    return CLASSES[m.group(1).lower()], int(m.group(2))


def _read_member(archive, info):
    """A photo's bytes from the archive; a member that would inflate past the image size limit
    (a zip bomb) is refused before it is inflated."""
    if info.file_size > MAX_FILE_BYTES:
        raise BadImage(f"too large for an image ({info.file_size:,} bytes inflated; the limit is {MAX_FILE_BYTES:,})")
    return archive.read(info)


def _members(source):
    """Yield (class, number, name, read()) for every photo in a zip (nested zips too) or folder."""
    if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
        for dirpath, _, filenames in os.walk(source):
            for n in filenames:
                path = os.path.join(dirpath, n)
                hit = _classify(os.path.relpath(path, source).replace(os.sep, "/"))
                if hit:
                    yield hit[0], hit[1], os.path.relpath(path, source), (lambda p=path: read_file(p))
        return
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as e:
        raise SmallvisionError(f"{source}: not a readable zip archive or folder ({e})") from None
    # The archive stays open while the readers yielded here are in use (closed when collected).
    for info in archive.infolist():
        if info.filename.lower().endswith(".zip") and "train" in os.path.basename(info.filename).lower():
            if info.file_size > MAX_INNER_ZIP_BYTES:  # zipfile never inflates past the declared size
                raise SmallvisionError(f"{source}: member {info.filename} would inflate to {info.file_size:,} bytes "
                                       f"(more than {MAX_INNER_ZIP_BYTES:,}); not a dogs-vs-cats archive")
            yield from _members(io.BytesIO(archive.read(info)))  # Kaggle's zip holds train.zip
            continue
        hit = _classify(info.filename)
        if hit and not info.is_dir():
            yield hit[0], hit[1], info.filename, (lambda i=info: _read_member(archive, i))


def get_cats_vs_dogs(to="data", source=None, url=OFFICIAL_URL, sha256=None, sizes=CHAPTER_SIZES, progress=True):
    """Write ``<to>/cats_vs_dogs_small/{train,validation,test}/{cats,dogs}/`` and a manifest.

    Args:
        to: parent folder of the data set (and of ``.download/``).
        source: a local archive or extracted folder; None downloads ``url``.
        url: where to download from (the official Microsoft address by default).
        sha256: expected sha256 of the archive (known archives are checked anyway).
        sizes: ``((split, per class), ...)``; the chapter's 1,000 / 500 / 1,000 by default.

    Returns:
        A summary dict: folder, per-split counts, dropped files and why.
    """
    if source is None:
        name = os.path.basename(url.split("?")[0]) or "archive.zip"
        known = KNOWN_ARCHIVES.get(name, {})
        source = download(url, os.path.join(to, ".download", name), known.get("bytes"),
                          sha256 or known.get("sha256"), progress=progress)
    elif not os.path.exists(source):
        raise SmallvisionError(f"{source}: no such archive or folder")
    elif sha256 and os.path.isfile(source):
        verify(source, None, sha256)
    need = sum(n for _, n in sizes)
    found = {c: [] for c in CLASSES.values()}
    for cls, number, name, read in _members(source):
        found[cls].append((number, name, read))
    known = KNOWN_ARCHIVES.get(os.path.basename(str(source)))
    notes = []
    for cls, items in found.items():
        if known and len(items) != known["per_class"]:
            notes.append(f"{cls}: {len(items)} photos where the archive should hold {known['per_class']}")
        if not items:
            raise SmallvisionError(f"{source}: no {cls} photos found (expected PetImages/Cat|Dog/<n>.jpg "
                                   "or cat.<n>.jpg / dog.<n>.jpg)")
    final = os.path.join(to, "cats_vs_dogs_small")
    work = os.path.join(to, ".tmp-cats_vs_dogs_small")
    shutil.rmtree(work, ignore_errors=True)
    manifest, dropped = [], []
    bar = Progress("checking photos", sum(min(len(v), need) for v in found.values()), enabled=progress)
    for cls, items in found.items():
        items.sort(key=lambda t: t[0])
        kept = []
        for number, name, read in items:
            if len(kept) == need:
                break
            try:
                data = read()
                _, info = decode_bytes(data, VERIFY_SPEC)
            except BadImage as e:
                dropped.append((name, str(e)))
                bar.update()
                continue
            kept.append((number, name, data, info))
            bar.update()
        if len(kept) < need:
            raise SmallvisionError(f"{source}: only {len(kept)} usable {cls} photos; the split needs {need}")
        start = 0
        for split, n in sizes:
            folder = os.path.join(work, split, cls)
            os.makedirs(folder, exist_ok=True)
            for number, name, data, info in kept[start:start + n]:
                filename = f"{cls[:-1]}.{number}.jpg"
                with open(os.path.join(folder, filename), "wb") as f:
                    f.write(data)
                manifest.append((split, cls, filename, name, hashlib.sha256(data).hexdigest(), len(data),
                                 info.width, info.height))
            start += n
    bar.close()
    write_text_atomic(os.path.join(work, "MANIFEST.tsv"), "split\tclass\tfilename\tsource\tsha256\tbytes\twidth\theight\n"
                      + "".join("\t".join(map(str, r)) + "\n" for r in manifest))
    write_text_atomic(os.path.join(work, "DROPPED.tsv"), "source\treason\n" +
                      "".join(f"{n}\t{why}\n" for n, why in dropped))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(work, final)
    counts = {split: {c: n for c in CLASSES.values()} for split, n in sizes}
    return dict(folder=final, counts=counts, dropped=dropped, notes=notes, source=str(source))
