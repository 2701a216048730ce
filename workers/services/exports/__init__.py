"""Label exports for data managers: asynchronous jobs that write one zip (masks in the requested formats,
optionally the de-identified images, `manifest.json` with provenance per mask, and checksums) to the
storage backend. Entry points: `job.export_job_create`, `job.export_job_run`, `job.export_jobs_expire`."""
