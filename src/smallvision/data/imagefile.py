"""Open a user's image files safely: the one place that does it.

The scan, ``predict``, ``explain``'s image arguments and ``data get --from FOLDER`` all read
images through here, so the same file gets the same verdict everywhere:

* only regular files are read, and the check is made on the opened descriptor (opened
  non-blocking), so a named pipe, socket or device is refused instead of blocking forever,
  and a file swapped for a pipe between a check and the read cannot slip through;
* files larger than :data:`MAX_FILE_BYTES` are refused before they are read (the decoder's
  pixel limit — Pillow's decompression-bomb guard — applies after);
* folders are walked with linked folders followed once (a symlink loop is walked once and
  reported), hidden files and OS litter ignored, in sorted order;
* every refusal is a :class:`~.decode.BadImage` whose message is the reason the scan shows
  (README: "what is rejected").
"""
import errno
import glob
import os
import stat

from ..errors import SmallvisionError
from .decode import BadImage, decode_bytes

MAX_FILE_BYTES = 256 * 2 ** 20  # no photo is this large; a 4 GB video named .jpg would be read into memory
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")
IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini", "__MACOSX"}
NOT_REGULAR = "not a regular file (a pipe, socket or device)"  # reading it would block forever


def visible(name):
    """Not hidden, not OS litter (.DS_Store, Thumbs.db, __MACOSX, …)."""
    return not name.startswith(".") and name not in IGNORED_NAMES


def read_file(path, max_bytes=MAX_FILE_BYTES):
    """The bytes of a regular file, or BadImage with the reason (never blocks)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except IsADirectoryError:
        raise BadImage("is a folder, not a file") from None
    except OSError as e:
        if e.errno == errno.ENXIO:  # a socket, or a pipe opened for writing only
            raise BadImage(NOT_REGULAR) from None
        raise BadImage(f"unreadable: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise BadImage("is a folder, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise BadImage(NOT_REGULAR)
        if st.st_size > max_bytes:
            raise BadImage(f"too large for an image ({st.st_size:,} bytes; the limit is {max_bytes:,})")
        with os.fdopen(fd, "rb", closefd=True) as f:
            fd = None
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise BadImage(f"unreadable: {e.strerror or e}") from None
    finally:
        if fd is not None:
            os.close(fd)
    if len(data) > max_bytes:  # grew while being read
        raise BadImage(f"too large for an image (more than {max_bytes:,} bytes)")
    return data


def read_image(path, spec):
    """Decode the image file at ``path`` to ``spec``: ``(uint8 array, ImageInfo)``; BadImage
    names what is wrong (not the path)."""
    return decode_bytes(read_file(path), spec)


def walk(folder, suffixes=None):
    """Every visible file under ``folder``, recursively, sorted; linked folders followed once.

    Args:
        suffixes: keep only names ending with one of these (lower-cased), e.g. IMAGE_SUFFIXES.

    Returns:
        ``(paths relative to folder with "/" separators, warnings [(relative path, message)])``.
        A link back to a folder already being walked (a loop) or already walked, and a
        sub-folder that cannot be listed, become warnings.

    Raises:
        SmallvisionError: ``folder`` itself cannot be listed.
    """
    out, warnings = [], []
    top = os.path.realpath(folder)
    seen = {top}

    def rel_of(dirpath, name=None):
        rel = os.path.relpath(dirpath, folder)
        parts = ([] if rel == "." else rel.split(os.sep)) + ([name] if name else [])
        return "/".join(parts)

    def unreadable(e):  # os.walk lists each folder once and reports here what it could not list
        if os.path.abspath(e.filename) == os.path.abspath(folder):
            raise SmallvisionError(f"{folder}: cannot read the folder ({e.strerror or e})")
        warnings.append((rel_of(e.filename), f"folder cannot be read ({e.strerror or e}): skipped"))

    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True, onerror=unreadable):
        keep = []
        for d in sorted(d for d in dirnames if visible(d)):
            real = os.path.realpath(os.path.join(dirpath, d))
            if real in seen or top.startswith(real + os.sep):  # seen, or an ancestor: a loop
                warnings.append((rel_of(dirpath, d), "linked folder already scanned (a loop or a second link): skipped"))
                continue
            seen.add(real)
            keep.append(d)
        dirnames[:] = keep
        prefix = rel_of(dirpath)  # once per folder: thousands of files share it
        prefix = prefix + "/" if prefix else ""
        out += [prefix + n for n in sorted(filenames)
                if visible(n) and (suffixes is None or n.lower().endswith(suffixes))]
    return out, warnings


def expand(paths, suffixes=IMAGE_SUFFIXES):
    """Files, folders (searched recursively for image files) and glob patterns -> file paths.

    Every argument must name something: a path that does not exist, a glob that matches
    nothing, a folder with no image file, a folder that cannot be read — each is a one-line
    SmallvisionError. A file that exists is kept whatever it holds (a pipe, a text file named
    .jpg): reading it is what reports it, with the scan's reason.

    Returns:
        ``(paths in argument order, each file once; warnings [(path, message)])``.
    """
    files, warnings, seen = [], [], set()

    def add(p):
        if p not in seen:
            seen.add(p)
            files.append(p)

    def folder_files(p):
        found, notes = walk(p, suffixes)
        warnings.extend((os.path.join(p, *r.split("/")), m) for r, m in notes)
        return [os.path.join(p, *r.split("/")) for r in found]

    looked_for = f"looked for {', '.join(suffixes)}"
    for p in map(os.fspath, paths):
        if os.path.isdir(p):
            found = folder_files(p)
            if not found:
                raise SmallvisionError(f"{p}: no image files in this folder ({looked_for})")
        elif os.path.lexists(p):
            found = [p]
        elif any(ch in p for ch in "*?["):
            found = []
            for m in sorted(glob.glob(p, recursive=True)):
                found += folder_files(m) if os.path.isdir(m) else [m]
            if not found:
                raise SmallvisionError(f"{p}: matches no image file ({looked_for})")
        else:
            raise SmallvisionError(f"{p}: no such file or folder")
        for f in found:
            add(f)
    return files, warnings
