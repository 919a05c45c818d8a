"""Validation metrics, computed once on gathered predictions (scikit-learn does the arithmetic)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, log_loss

# Larger is better for these; smaller for the rest. Used to pick best epochs and ensemble weights.
HIGHER_IS_BETTER = {"accuracy", "f1_macro"}


def classification_metrics(probs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """accuracy, log loss and macro F1 of class probabilities (N, C) against integer targets (N,)."""
    labels = np.arange(probs.shape[1])
    probs = probs.astype(np.float64)
    probs = probs / probs.sum(1, keepdims=True)  # float32 sums drift from 1; sklearn warns and rescales anyway
    predictions = probs.argmax(1)
    return {
        "accuracy": float(accuracy_score(targets, predictions)),
        "log_loss": float(log_loss(targets, np.clip(probs, 1e-15, 1.0), labels=labels)),
        "f1_macro": float(f1_score(targets, predictions, labels=labels, average="macro", zero_division=0)),
    }


def is_better(score: float, best: float | None, mode: str) -> bool:
    if best is None:
        return True
    return score > best if mode == "max" else score < best
