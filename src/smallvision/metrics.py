"""Classification metrics from predicted probabilities (shared by runs and reports): the loss
as Keras computes it, and accuracy, confusion matrix and per-class precision/recall/F1 from
scikit-learn."""
import numpy as np

EPSILON = 1e-7  # Keras' backend epsilon, used to clip probabilities in cross-entropy


def cross_entropy(probs, labels):
    """Per-sample cross-entropy of the true class, clipped like Keras'."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    return -np.log(np.clip(probs[np.arange(len(labels)), labels], EPSILON, 1 - EPSILON))


def classification_metrics(probs, labels, class_names):
    """Loss, accuracy, confusion matrix and per-class precision/recall/F1.

    Args:
        probs: ``[n, num_classes]`` probabilities.
        labels: ``[n]`` true class indices.
        class_names: names in class-index order.

    Returns:
        A JSON-ready dict. ``confusion_matrix[i][j]`` counts images of class i predicted as j.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if n == 0:
        return {"n": 0}
    classes = list(range(len(class_names)))
    pred = probs.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(labels, pred, labels=classes, zero_division=0)
    per_class = {name: dict(precision=round(float(precision[i]), 4), recall=round(float(recall[i]), 4),
                            f1=round(float(f1[i]), 4), support=int(support[i]))
                 for i, name in enumerate(class_names)}
    return dict(n=n, loss=round(float(cross_entropy(probs, labels).mean()), 5),
                accuracy=round(float(accuracy_score(labels, pred)), 5),
                confusion_matrix=confusion_matrix(labels, pred, labels=classes).tolist(), per_class=per_class)
