"""Chance-corrected agreement between readers, per voxel: Cohen's kappa (2) and Fleiss' kappa (3+).

Voxels are the subjects and labels the categories. Degenerate case: when chance agreement is 1
(every reader put every voxel in the same single category) kappa is 0/0; we return 1.0, because the
readers agree completely, and a number keeps JSON and statistics working.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from workers.ml.agreement.consensus import present_labels, stack_masks


def cohens_kappa_table(table: np.ndarray) -> float:
    """Cohen's kappa from a K x K contingency table (rows: reader A's category, columns: reader B's)."""
    t = np.asarray(table, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] != t.shape[1] or (t < 0).any() or t.sum() <= 0:
        raise ValueError("table must be a square non-negative count matrix with a positive total")
    total = t.sum()
    p_observed = np.trace(t) / total
    p_chance = float((t.sum(axis=1) / total) @ (t.sum(axis=0) / total))
    if np.isclose(p_chance, 1.0):
        return 1.0
    return float((p_observed - p_chance) / (1.0 - p_chance))


def contingency(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """K x K voxel counts of (label in a, label in b) over the union of labels, and those labels."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    labels = np.union1d(np.unique(a), np.unique(b))
    k = labels.size
    ia = np.searchsorted(labels, a.ravel())
    ib = np.searchsorted(labels, b.ravel())
    table = np.bincount(ia * k + ib, minlength=k * k).reshape(k, k)
    return table, tuple(int(v) for v in labels)


def cohens_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa between two label maps of one shape, per voxel (binary or multi-label)."""
    table, _ = contingency(a, b)
    return cohens_kappa_table(table)


def fleiss_kappa_counts(counts: np.ndarray) -> float:
    """Fleiss' kappa from an N x K table: counts[i, j] = readers who put subject i in category j.

    Every row must sum to the same number of readers n >= 2.
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] == 0 or (c < 0).any():
        raise ValueError("counts must be a non-empty non-negative N x K matrix")
    n = c.sum(axis=1)
    if not np.allclose(n, n[0]) or n[0] < 2:
        raise ValueError("every subject needs the same number (>= 2) of ratings")
    raters = n[0]
    p_cat = c.sum(axis=0) / c.sum()
    p_chance = float((p_cat**2).sum())
    if np.isclose(p_chance, 1.0):
        return 1.0
    p_subject = ((c**2).sum(axis=1) - raters) / (raters * (raters - 1))
    return float((p_subject.mean() - p_chance) / (1.0 - p_chance))


def fleiss_kappa(masks: Sequence[np.ndarray]) -> float:
    """Fleiss' kappa over 2+ readers' label maps of one shape (voxels = subjects, labels = categories)."""
    stack = stack_masks(masks)
    flat = stack.reshape(stack.shape[0], -1)
    labels = present_labels(flat)
    counts = np.stack([(flat == lab).sum(axis=0) for lab in labels], axis=1)
    return fleiss_kappa_counts(counts)
