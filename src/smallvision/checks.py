"""One place for checking what users pass — numbers, image sizes, split fractions, seeds,
choices — used alike by the CLI, the Python API and the ladder (scikit-learn's
``check_scalar`` idea). Every refusal is a :class:`SmallvisionError` in Keras' form:
``"<what was expected>. Received: name=value"``.
"""
import numbers

from .errors import SmallvisionError

DEFAULT_IMAGE_SIZE = (180, 180)  # the chapter's; pretrained strategies default to their backbone's size
DEFAULT_SPLIT = (0.7, 0.15, 0.15)  # train, validation, test, for a folder without split folders
MIN_IMAGE_SIDE = 8


def _flag(name):
    return name.replace("_", "-")


def check_positive(name, value, integer=False, allow_none=False):
    """``value`` > 0 (an int when ``integer``); returns it. ``name`` as the API spells it."""
    if value is None and allow_none:
        return None
    kind = numbers.Integral if integer else numbers.Real
    if not isinstance(value, kind) or isinstance(value, bool) or not value > 0:
        what = "a positive integer" if integer else "a positive number"
        raise SmallvisionError(f"{_flag(name)} must be {what}. Received: {name}={value!r}")
    return int(value) if integer else value


def check_seed(value, name="seed"):
    """A non-negative integer seed; returns it."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise SmallvisionError(f"{_flag(name)} must be an integer >= 0. Received: {name}={value!r}")
    return int(value)


def check_choice(name, value, choices):
    """``value`` is one of ``choices``; returns it."""
    if value not in choices:
        raise SmallvisionError(f"{_flag(name)} must be one of {', '.join(map(str, choices))}. "
                               f"Received: {name}={value!r}")
    return value


def lookup(table, name, what):
    """``table[name]``, or a one-line error listing what there is ("unknown strategy; expected one of: …")."""
    try:
        return table[name]
    except (KeyError, TypeError):
        raise SmallvisionError(f"unknown {what}; expected one of: {', '.join(table)}. "
                               f"Received: {what}={name!r}") from None


def image_size(value, name="image_size"):
    """One number of pixels, ``"H,W"`` / ``"HxW"`` text, or a ``(height, width)`` pair -> ``(h, w)``."""
    parts = value
    if isinstance(value, str):
        try:
            parts = [int(p) for p in value.lower().replace("x", ",").split(",")]
        except ValueError:
            parts = None
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
        parts = [value]
    try:
        parts = list(parts)
    except TypeError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    ok = len(parts) == 2 and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in parts)
    if not ok or min(parts) < MIN_IMAGE_SIDE:
        raise SmallvisionError(f"{_flag(name)} must be SIZE or HEIGHT,WIDTH in pixels, each >= {MIN_IMAGE_SIDE}. "
                               f"Received: {name}={value!r}")
    return int(parts[0]), int(parts[1])


def split_fractions(value, name="split"):
    """``"0.7,0.15,0.15"`` or three numbers -> ``(train, validation, test)`` that add up to 1."""
    text = value if isinstance(value, str) else ",".join(map(str, value))
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 0 or parts[0] <= 0 or abs(sum(parts) - 1) > 1e-6:
        raise SmallvisionError(f"{_flag(name)} must be three fractions train,validation,test that add up to 1 "
                               f"(e.g. 0.7,0.15,0.15). Received: {name}={value!r}")
    return parts
