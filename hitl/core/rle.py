"""Run-length coding of a flat sequence, the one core under both mask formats that need it: the API's
(row-major label values + lengths, annotations.services.masks) and COCO's (column-major 0/1 counts,
workers.services.exports.coco). Each format orders the pixels and validates its input itself. Pure numpy."""

import numpy as np


def runs(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 1-D array -> (starts, lengths) of its maximal runs of equal values, as int64 arrays.
    `flat[starts]` are the run values; an empty array has no runs."""
    if flat.ndim != 1:
        raise ValueError(f"runs() takes a 1-D array, not {flat.ndim}-D")
    if flat.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1)).astype(np.int64)
    lengths = np.diff(np.append(starts, flat.size))
    return starts, lengths


def expand_runs(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The inverse of `runs`: each value repeated by its length, keeping the values' dtype. Precondition
    (checked by the caller, which knows its format's error): equal-length 1-D arrays, lengths >= 0."""
    return np.repeat(values, lengths)
