"""The Python API: the same verbs as the command line, in one place. Nothing is implemented
here — each verb lives in the module that owns its job, and is re-exported:

    import smallvision.api as sv
    run = sv.train("data/cats_vs_dogs_small", strategy="augment", epochs=100)
    print(run.metrics["test"]["accuracy"])
    sv.predict(run.path, ["new_photos/"])

============================  ==========================================================
verbs                         where they live
============================  ==========================================================
train, resume, describe       :mod:`smallvision.runner` (the stage loop: ``train.py``)
open_model, predict           :mod:`smallvision.inference`
ladder                        :mod:`smallvision.ladder`
report, summary_table         :mod:`smallvision.report`
explain_*                     :mod:`smallvision.explain.verbs`
scan, data_get/split/check    :mod:`smallvision.data.tools`
demo                          :mod:`smallvision.demo`
strategies, backbones         the registries (:mod:`.strategies`, :mod:`.backbones.registry`)
============================  ==========================================================

Every user mistake raises :class:`SmallvisionError` (a ``ValueError``) with a one-line message.
"""
from .backbones.registry import table as _backbone_table
from .config import versions
from .data.tools import data_check, data_get, data_split
from .data.tools import scan_and_split as scan
from .demo import demo
from .errors import SmallvisionError
from .explain.verbs import explain_activations, explain_conv, explain_heatmap, explain_model, explain_pooling
from .inference import open_model, predict
from .ladder import ladder
from .report import summary_table
from .report import write_report as report
from .runner import describe, resume, train
from .runs import load_model

__all__ = ["SmallvisionError", "backbones", "data_check", "data_get", "data_split", "demo", "describe",
           "explain_activations", "explain_conv", "explain_heatmap", "explain_model", "explain_pooling",
           "ladder", "load_model", "open_model", "predict", "report", "resume", "scan", "strategies",
           "summary_table", "train", "versions"]


def strategies():
    """{name: one-line summary} of the training strategies."""
    from . import strategies as registry
    return {name: registry.get(name).summary for name in registry.names()}


def backbones():
    """Rows (name, native size, preprocessing, weights from, status) of the backbone registry."""
    return _backbone_table()
