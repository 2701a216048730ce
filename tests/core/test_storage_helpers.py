"""The storage helpers a revision is written with: no orphan file when its row fails, and label counts."""

import numpy as np
import pytest
from django.core.files.storage import default_storage

from hitl.core.storage import bytes_load, delete_quietly, label_counts, saved_unless_failed


def test_a_file_stays_when_its_row_is_written_and_goes_when_it_fails():
    with saved_unless_failed("storage-helper-test/r0001.png", b"kept") as path:
        pass
    assert bytes_load(path) == b"kept"
    with pytest.raises(RuntimeError), saved_unless_failed("storage-helper-test/r0002.png", b"gone") as failed:
        raise RuntimeError("the row failed")
    assert not default_storage.exists(failed)
    delete_quietly([path])


def test_label_counts_known_answer():
    mask = np.array([[0, 0, 1], [2, 2, 2]], dtype=np.uint8)
    assert label_counts(mask) == {"0": 2, "1": 1, "2": 3}
