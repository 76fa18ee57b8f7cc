"""User-facing errors: one line, names the file or parameter and what was wrong, no traceback."""


class SmallvisionError(ValueError):
    """A mistake in the user's input (data, options, run folders, files).

    A ``ValueError``, as library errors are (scikit-learn's, Keras'): callers that already
    catch ``ValueError`` need nothing new. The CLI prints ``smallvision: error: <message>``
    and exits with status 2.
    """
