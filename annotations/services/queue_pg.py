"""The reader's claim on PostgreSQL as one statement (one round trip, no BEGIN/COMMIT).

The common claim (the reader holds no lease and the queue has a case for them) picks the highest-priority case
the reader has not read with a free slot, locking it with `FOR NO KEY UPDATE SKIP LOCKED`, takes its lowest
free slot, inserts the assignment, marks the slot taken and writes the audit row ("case.claim", as
`queue._audit` does), all in one data-modifying `WITH` statement. The
rules are the ORM path's (`queue._claim_orm`), which still serves SQLite and the rare cases this statement
leaves to it (a lease already held, an expired one to close, an empty queue): when the statement claims
nothing, the caller falls back to that path, so the outcome is the same on both databases. The database
constraints on Assignment back the rules here as they do there."""

import json
from datetime import datetime

from django.db import connection

from annotations.models import Assignment, AssignmentStatus, Case, CaseSplit, Project
from annotations.models.queue import READ_ONCE
from hitl.core.models import AuditEvent
from hitl.core.types import User

_SQL = """
WITH pick AS (
    SELECT c.id, c.queue_reason,
           (SELECT s FROM generate_series(0, GREATEST(c.readers_required, %(readers)s) - 1) AS s
             WHERE c.slots_mask & (1 << s) = 0 ORDER BY s LIMIT 1) AS slot
      FROM {case} c
     WHERE c.project_id = %(project)s AND c.split = %(pool)s AND c.flagged_at IS NULL
       AND c.reads_taken < GREATEST(c.readers_required, %(readers)s)
       AND NOT EXISTS (SELECT 1 FROM {assignment} a
                        WHERE a.case_id = c.id AND a.reader_id = %(reader)s AND a.status IN ({read_once}))
       AND NOT EXISTS (SELECT 1 FROM {assignment} h
                        WHERE h.project_id = %(project)s AND h.reader_id = %(reader)s AND h.status = %(active)s)
     ORDER BY c.priority DESC, c.id
     LIMIT 1
       FOR NO KEY UPDATE OF c SKIP LOCKED
), claimed AS (
    INSERT INTO {assignment} (project_id, case_id, reader_id, slot, status, reason, queue_reason,
                              claimed_at, expires_at, holder)
    SELECT %(project)s, pick.id, %(reader)s, pick.slot, %(active)s, '', pick.queue_reason,
           %(now)s, %(expires)s, %(holder)s
      FROM pick
     WHERE pick.slot IS NOT NULL
    RETURNING id, case_id, slot, queue_reason
), taken AS (
    UPDATE {case} c
       SET slots_mask = c.slots_mask | (1 << claimed.slot), reads_taken = c.reads_taken + 1
      FROM claimed
     WHERE c.id = claimed.case_id
), audited AS (
    INSERT INTO {audit} (actor_id, project_id, action, target_type, target_id, details, at)
    SELECT %(reader)s, %(project)s, 'case.claim', 'assignment', claimed.id::text,
           jsonb_build_object('case_id', claimed.case_id, 'slot', claimed.slot), %(now)s
      FROM claimed
)
SELECT id, case_id, slot, queue_reason FROM claimed
"""


CLAIM_SQL = _SQL.format(
    case=Case._meta.db_table,
    assignment=Assignment._meta.db_table,
    audit=AuditEvent._meta.db_table,
    read_once=", ".join(f"'{status.value}'" for status in READ_ONCE),  # enum values, not user input
)


def claim_one_statement(
    *, project: Project, reader: User, now: datetime, expires: datetime, holder: str = ""
) -> Assignment | None:
    """The new assignment, or None when this statement claimed nothing (see the module docstring)."""
    params: dict[str, int | str | datetime] = {
        "project": project.pk,
        "reader": reader.pk,
        "readers": project.readers_per_case,
        "pool": CaseSplit.POOL.value,
        "active": AssignmentStatus.ACTIVE.value,
        "now": now,
        "expires": expires,
        "holder": holder,
    }
    with connection.cursor() as cursor:
        cursor.execute(CLAIM_SQL, params)
        row = cursor.fetchone()
    if row is None:
        return None
    pk, case_id, slot, reason = row
    return Assignment(
        pk=pk,
        project=project,
        case_id=case_id,
        reader=reader,
        slot=slot,
        status=AssignmentStatus.ACTIVE,
        queue_reason=json.loads(reason) if isinstance(reason, str) else reason,
        claimed_at=now,
        expires_at=expires,
        holder=holder,
    )
