"""Training strategies: one module each, registered by name where it is defined.

The contract and its defaults are :class:`.base.Strategy`, their options :mod:`.options`, what a
run trains :class:`.spec.TrainSpec`; importing this package imports every strategy module (the
chapter's ladder in order, then the teaching extra), which registers it, and no Keras. Find
one with :func:`get`, list them with :func:`names`.
"""
# isort: off  -- the order of these imports is the registry's order: the chapter's ladder, then extras
from . import scratch, augment, features, features_augment, finetune, nopool  # noqa: F401,E401
# isort: on
from .base import Stage, Strategy, get, names, register  # noqa: F401
from .spec import TrainSpec  # noqa: F401

LADDER = ("scratch", "augment", "features", "features-augment", "finetune")  # the chapter's order
