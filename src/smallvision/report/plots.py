"""The chapter's training curves: training vs validation loss and accuracy per epoch."""
import io

from .._io import write_bytes_atomic


def plot_curves(history, path, title=None):
    """Write ``curves.png``: two panels (loss, accuracy), training dots and validation line.

    Args:
        history: list of dicts with ``epoch``, ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``.
        path: PNG file to write (atomically).
        title: optional figure title.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(r["epoch"]) for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "loss", "Loss"), (axes[1], "accuracy", "Accuracy")):
        ax.plot(epochs, [float(r[key]) for r in history], "bo", markersize=3, label=f"Training {key}")
        ax.plot(epochs, [float(r["val_" + key]) for r in history], "b", label=f"Validation {key}")
        ax.set_title(f"Training and validation {key}")
        ax.set_xlabel("Epochs")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
