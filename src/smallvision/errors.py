"""User-facing errors: one line, names the file and what was wrong, no traceback."""


class SmallvisionError(Exception):
    """A mistake in the user's input (data, options, run folders).

    The CLI prints ``smallvision: error: <message>`` and exits with status 2.
    """
