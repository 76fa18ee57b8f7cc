"""Pictures of runs, as PNG bytes: the chapter's training curves (each run folder's
curves.png, written by the runner), validation accuracy of several runs on one plot, and a
grid of the test images a model gets most wrong (both in the report)."""
from ._io import png_bytes, write_bytes_atomic


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _integer_epochs(ax):
    """Epoch ticks are whole numbers (matplotlib would put 0.5 steps on a short run)."""
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _png(fig):
    data = png_bytes(fig)
    _pyplot().close(fig)
    return data


def curves_png(history, title=None, stages=None):
    """Two panels (loss, accuracy), training dots and validation line, as in the chapter.

    Args:
        history: list of dicts with ``epoch``, ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``.
        title: optional figure title.
        stages: optional ``{stage name: first epoch}``; a dashed line marks where each later one began.
    """
    plt = _pyplot()
    epochs = [int(r["epoch"]) for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "loss", "Loss"), (axes[1], "accuracy", "Accuracy")):
        ax.plot(epochs, [float(r[key]) for r in history], "bo", markersize=3, label=f"Training {key}")
        # a line of one point draws nothing: a one-epoch run gets a marker
        ax.plot(epochs, [float(r["val_" + key]) for r in history], "b", marker="o" if len(epochs) == 1 else None,
                label=f"Validation {key}")
        for name, first in sorted((stages or {}).items(), key=lambda kv: kv[1])[1:]:
            ax.axvline(first - 0.5, color="gray", linestyle="--", linewidth=1)
            ax.annotate(name, (first - 0.5, 1), xycoords=("data", "axes fraction"), color="gray",
                        fontsize=8, xytext=(3, -12), textcoords="offset points")
        ax.set_title(f"Training and validation {key}")
        ax.set_xlabel("Epochs")
        _integer_epochs(ax)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _png(fig)


def plot_curves(history, path, title=None, stages=None):
    """Write ``curves.png`` (atomically); see :func:`curves_png`."""
    write_bytes_atomic(path, curves_png(history, title, stages))


def overlay_png(series, title="Validation accuracy"):
    """Validation accuracy per epoch of several runs on one plot: ``{label: history}``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, history in series.items():
        ax.plot([int(r["epoch"]) for r in history], [float(r["val_accuracy"]) for r in history], label=label,
                marker="o" if len(history) == 1 else None)
    ax.set_title(title)
    ax.set_xlabel("Epochs")
    _integer_epochs(ax)
    ax.set_ylabel("Validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _png(fig)


def grid_png(items, columns=4, title=None):
    """Images in a grid with a caption each: ``[(uint8 HxWx3 array or None, caption)]``."""
    plt = _pyplot()
    rows = max(1, -(-len(items) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image, caption) in zip(axes.flat, items):
        if image is not None:
            ax.imshow(image)
        else:
            ax.text(0.5, 0.5, "(unreadable)", ha="center", va="center")
        ax.set_title(caption, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _png(fig)
