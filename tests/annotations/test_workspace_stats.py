import numpy as np
import pytest

from annotations.models import Role
from annotations.selectors.workspace import reader_progress as reader_stats
from annotations.services.queue import case_claim_next
from tests.annotations.test_queue import _mask, _submit
from workers.services.agreement import agreement_update


@pytest.mark.django_db
def test_reader_sees_own_agreement_once_colleagues_read_the_same_case(project, pool, member, client_for):
    project.readers_per_case = 2
    project.save()
    readers = [member(Role.ANNOTATOR) for _ in range(2)]
    assert reader_stats(project=project, reader=readers[0])["agreement"] is None
    case_id = None
    for i, reader in enumerate(readers):
        case_id = case_claim_next(project=project, reader=reader).case_id
        mask = _mask() if i == 0 else np.roll(_mask(), 1, axis=1)
        assert _submit(client_for(reader), case_id, mask).status_code == 201
    agreement_update(case_id=case_id)
    stats = reader_stats(project=project, reader=readers[0])
    assert stats["cases_done"] == 1 and stats["agreement"]["cases"] == 1
    assert 0.5 < stats["agreement"]["mean_dice"] <= 1.0
