"""Scripted exports: the same job as the API (same checks, same zip, same audit rows), run in this
process with a progress bar, and the zip copied to --output.

    manage.py export_labels --project 1 --user demo_data --format nifti --format png \
        [--labels latest|consensus|all] [--split test] [--from 2026-01-01] [--to 2026-12-31] \
        [--reader 7] [--model-version 3] [--include-images] [--output labels.zip]
"""

import datetime
import shutil

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from annotations.models import Project
from hitl.core.permissions import Action, allows, user_roles
from workers.models import ExportFormat, ExportLabels, ExportStatus
from workers.services.exports.job import export_job_create, export_job_run


def _date(value: str) -> datetime.date:
    return datetime.date.fromisoformat(value)


class Command(BaseCommand):
    help = "Export labels of a project (NIfTI, DICOM SEG, PNG, COCO, agreement CSV) as a zip with provenance."

    def add_arguments(self, parser):
        parser.add_argument("--project", type=int, required=True)
        parser.add_argument("--user", required=True, help="a data manager or admin of the project")
        parser.add_argument(
            "--format", dest="formats", action="append", choices=ExportFormat.values, required=True
        )
        parser.add_argument("--labels", choices=ExportLabels.values, default=ExportLabels.LATEST)
        parser.add_argument("--split", dest="splits", action="append", default=[])
        parser.add_argument("--from", dest="date_from", type=_date)
        parser.add_argument("--to", dest="date_to", type=_date)
        parser.add_argument("--reader", dest="reader_ids", type=int, action="append", default=[])
        parser.add_argument(
            "--model-version", dest="model_version_ids", type=int, action="append", default=[]
        )
        parser.add_argument("--include-images", action="store_true")
        parser.add_argument("--output", help="copy the zip here (it also stays on the storage backend)")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **opts):
        project = Project.objects.filter(pk=opts["project"]).first()
        user = get_user_model().objects.filter(username=opts["user"]).first()
        if project is None or user is None or not user_roles(user, project):
            raise CommandError("no such project, or the user is not a member of it")
        if not allows(user_roles(user, project), Action.EXPORT):
            raise CommandError("the user's role in this project does not allow exports")
        try:
            job = export_job_create(
                project=project,
                requested_by=user,
                formats=opts["formats"],
                labels=opts["labels"],
                splits=opts["splits"],
                date_from=opts["date_from"],
                date_to=opts["date_to"],
                reader_ids=opts["reader_ids"],
                model_version_ids=opts["model_version_ids"],
                include_images=opts["include_images"],
                enqueue=False,
            )
        except ValidationError as err:
            raise CommandError("; ".join(err.messages)) from err
        bar = tqdm(total=1, unit="step", disable=opts["no_progress"], desc=f"export {job.pk}")

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        job = export_job_run(job_id=job.pk, progress=progress)
        bar.close()
        if job is None or job.status != ExportStatus.SUCCEEDED:
            raise CommandError(f"export failed: {job.error if job else 'not run'}")
        if opts["output"]:
            with default_storage.open(job.result_path, "rb") as src, open(opts["output"], "wb") as dst:
                shutil.copyfileobj(src, dst)
        self.stdout.write(
            f"export {job.pk}: {job.counts.get('masks')} masks, {job.size_bytes} bytes, sha256 {job.sha256}"
            + (f" -> {opts['output']}" if opts["output"] else f" (storage: {job.result_path})")
        )
