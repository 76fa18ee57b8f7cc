"""Small file helpers shared by the cache and the run folder: every write is atomic."""
import hashlib
import json
import os
import uuid


def sha256_file(path):
    """The hex sha256 of a file's content, read in 1 MB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_bytes_atomic(path, data):
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    # os.open with 0o666 honours the umask (mkstemp would make every run file private, 0600)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}-{os.path.basename(path)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path, text):
    # surrogateescape: a file name that is not valid UTF-8 is written back as its own bytes
    write_bytes_atomic(path, text.encode("utf-8", "surrogateescape"))


def write_json_atomic(path, obj, compact=False):
    """Pretty JSON for people (run files); ``compact`` for large machine-only files (memos)."""
    text = (json.dumps(obj, separators=(",", ":")) if compact
            else json.dumps(obj, indent=2, sort_keys=True, default=str))
    write_text_atomic(path, text + "\n")


def png_bytes(image):
    """A Pillow image or a matplotlib figure as PNG bytes (the one PNG encoder of smallvision)."""
    import io
    buf = io.BytesIO()
    if hasattr(image, "savefig"):
        image.savefig(buf, format="png", dpi=100)
    else:
        image.save(buf, "PNG")
    return buf.getvalue()


def write_png(image, path):
    """Save a Pillow image or a matplotlib figure as a PNG file, atomically. Returns the path."""
    write_bytes_atomic(path, png_bytes(image))
    return path


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)
