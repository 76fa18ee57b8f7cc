"""The Python API: the same verbs as the command line, in one place. Nothing is implemented
here — each verb lives in the module that owns its job, and is re-exported:

    import smallvision.api as sv
    run = sv.train("data/cats_vs_dogs_small", strategy="augment", epochs=100)
    print(run.metrics.test.accuracy)
    sv.predict(run.path, ["new_photos/"])

============================  ==========================================================
verbs                         where they live
============================  ==========================================================
train, resume, describe       :mod:`smallvision.runner` (the Learner; the epochs: ``fitting.py``)
TrainSpec                     :mod:`smallvision.strategies.spec` (what a run trains, checked once)
open_model, predict           :mod:`smallvision.inference`
export                        :mod:`smallvision.export`
serve, make_app               :mod:`smallvision.serve`
ladder                        :mod:`smallvision.ladder`
audit                         :mod:`smallvision.audit`
curve                         :mod:`smallvision.curve`
report, summary_table         :mod:`smallvision.report`
explain_*                     :mod:`smallvision.explain.verbs`
scan, data_get/split/check    :mod:`smallvision.data.tools`
data_apply, data_undo         :mod:`smallvision.data.decisions` (acting on an audit, undoably)
demo                          :mod:`smallvision.demo`
strategies, backbones         the registries (:mod:`.strategies`, :mod:`.backbones.registry`)
============================  ==========================================================

Every user mistake raises :class:`SmallvisionError` (a ``ValueError``) with a one-line message.
"""
import importlib

# name -> (module that owns it, its name there). Imported on first use (PEP 562), so that
# `smallvision data check` or `scan` does not pay for TensorFlow's import (0.3 s, not 9 s).
_EXPORTS = {
    "SmallvisionError": ("errors", "SmallvisionError"), "versions": ("config", "versions"),
    "train": ("runner", "train"), "resume": ("runner", "resume"), "describe": ("runner", "describe"),
    "TrainSpec": ("strategies.spec", "TrainSpec"),
    "open_model": ("inference", "open_model"), "predict": ("inference", "predict"),
    "load_model": ("runs", "load_model"), "ladder": ("ladder", "ladder"), "export": ("export", "export"),
    "serve": ("serve", "serve"), "make_app": ("serve", "make_app"),
    "report": ("report", "write_report"), "summary_table": ("report", "summary_table"),
    "explain_conv": ("explain.verbs", "explain_conv"), "explain_model": ("explain.verbs", "explain_model"),
    "explain_pooling": ("explain.verbs", "explain_pooling"),
    "explain_activations": ("explain.verbs", "explain_activations"),
    "explain_heatmap": ("explain.verbs", "explain_heatmap"),
    "scan": ("data.tools", "scan_and_split"), "data_get": ("data.tools", "data_get"),
    "data_split": ("data.tools", "data_split"), "data_check": ("data.tools", "data_check"),
    "data_apply": ("data.decisions", "apply_decisions"), "data_undo": ("data.decisions", "undo"),
    "demo": ("demo", "demo"), "audit": ("audit", "audit"),
    "curve": ("curve", "curve"),
}
__all__ = sorted([*_EXPORTS, "strategies", "backbones"])


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    value = getattr(importlib.import_module(f"{__package__}.{module}"), attr)
    globals()[name] = value  # once found, an ordinary module attribute
    return value


def __dir__():
    return __all__


def strategies():
    """{name: one-line summary} of the training strategies."""
    from . import strategies as registry
    return {name: registry.get(name).summary for name in registry.names()}


def backbones():
    """Rows (name, native size, preprocessing, weights from, status) of the backbone registry."""
    from .backbones.registry import table
    return table()
