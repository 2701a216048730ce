"""Work lanes: queues grouped by how long someone waits for them. Each lane has its own worker process (the
run command starts one per lane; production scales each separately), so a reader's work never waits behind
a training run, a pool scoring, a report or an export.

- interactive: what a reader or the system is waiting for now: on-demand explanations, proposals for the
  head of the queue after a new version, agreement of a just-submitted case, lease expiry, the outbox sweep,
  image analysis. Queues: `interactive` (work sent there explicitly, `outbox_enqueue(queue=INTERACTIVE)`)
  and `default` (the routes of the housekeeping and agreement tasks, settings.CELERY_TASK_ROUTES).
- batch: training, pool scoring, the rest of the proposals and explanations, reports, exports, imports.

dev.py keeps a copy of LANES (it runs before anything is installed); a test checks they are the same.
"""

INTERACTIVE = "interactive"
LANES: dict[str, tuple[str, ...]] = {
    "interactive": (INTERACTIVE, "default"),
    "batch": ("ingest", "score", "explain", "train", "export"),
}
ALL_QUEUES: tuple[str, ...] = tuple(q for queues in LANES.values() for q in queues)
