"""Progress lines for long work (scanning, decoding, extracting): a counter with a rate and an ETA,
and :func:`duration`, the one way smallvision writes a span of time (ETAs, wall times, reports).

Why not ``keras.utils.Progbar``: it writes to stdout, and smallvision keeps stdout for what a
command produces (``predict``'s rows, the ladder's table) so that it can be piped; progress
goes to stderr. In a log (not a terminal) Progbar also says nothing until the end, where this
prints one line every few seconds.
"""
import sys
import time


def log(msg):
    """One line of progress or advice on stderr (stdout is for what a command produces)."""
    print(msg, file=sys.stderr, flush=True)


def duration(seconds):
    """Seconds -> "42s", "4m05s" or "1h44m"; None -> "-"."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    """Prints ``label  done/total  rate/s  ETA`` to stderr, at most a few times a second.

    On a terminal the line is redrawn in place; in logs one line is written every few seconds.
    """

    def __init__(self, label, total, unit="images", stream=None, enabled=True):
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stderr
        self.enabled = enabled and total > 0
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = self.last = time.perf_counter()
        self.done = 0

    def update(self, n=1):
        self.done += n
        now = time.perf_counter()
        if self.enabled and (now - self.last >= (0.25 if self.tty else 5.0)):
            self.last = now
            self._print(final=False)

    def close(self):
        if self.enabled:
            self._print(final=True)

    def _print(self, final):
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = self.done / elapsed
        if final:
            msg = f"{self.label}: {self.done}/{self.total} {self.unit} in {elapsed:.1f} s ({rate:.0f}/s)"
        else:
            eta = duration((self.total - self.done) / rate) if rate > 0 else "unknown"
            msg = f"{self.label}: {self.done}/{self.total} {self.unit} ({rate:.0f}/s, ETA {eta})"
        if self.tty:
            self.stream.write("\r" + msg + ("\n" if final else ""))
        else:
            self.stream.write(msg + "\n")
        self.stream.flush()
