"""Classification metrics from predicted probabilities (NumPy only; shared by runs and reports)."""
import numpy as np

EPSILON = 1e-7  # Keras' backend epsilon, used to clip probabilities in cross-entropy


def as_probabilities(outputs, num_classes):
    """Model outputs -> ``[n, num_classes]`` probabilities (a sigmoid output p becomes [1-p, p])."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if num_classes == 2 and outputs.ndim == 2 and outputs.shape[1] == 1:
        p = outputs[:, 0]
        return np.stack([1 - p, p], axis=1)
    return outputs


def classification_metrics(probs, labels, class_names):
    """Loss, accuracy, confusion matrix and per-class precision/recall/F1.

    Args:
        probs: ``[n, num_classes]`` probabilities.
        labels: ``[n]`` true class indices.
        class_names: names in class-index order.

    Returns:
        A JSON-ready dict. ``confusion_matrix[i][j]`` counts images of class i predicted as j.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    k = len(class_names)
    n = len(labels)
    if n == 0:
        return {"n": 0}
    pred = probs.argmax(axis=1)
    p_true = np.clip(probs[np.arange(n), labels], EPSILON, 1 - EPSILON)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (labels, pred), 1)
    per_class = {}
    for i, name in enumerate(class_names):
        tp = cm[i, i]
        predicted, actual = cm[:, i].sum(), cm[i, :].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = dict(precision=round(float(precision), 4), recall=round(float(recall), 4),
                               f1=round(float(f1), 4), support=int(actual))
    return dict(n=n, loss=round(float(-np.log(p_true).mean()), 5), accuracy=round(float((pred == labels).mean()), 5),
                confusion_matrix=cm.tolist(), per_class=per_class)
