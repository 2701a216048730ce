"""python manage.py seed_demo: one demo user per role and a demo project of real MRI (idempotent).

The images are the MNI152 2009 T1 template bundled with nilearn (no download); grey/white matter masks
from the same package are imported as reference labels for the validation and test slices only, so the
pool is left for the readers."""

import nibabel as nib
import numpy as np
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from annotations.models import CaseSplit, Membership, Modality, Project, Role
from annotations.services.projects import project_create
from hitl.core.types import User
from workers.models import QueryStrategy
from workers.services.imports import image_import
from workers.services.samples import demo_volume
from workers.services.training_settings import training_settings_update

DEMO_PROJECT = "Demo: brain tissue (MNI152 T1)"
# Local demo only (the run command binds 127.0.0.1). Change or delete these users on any shared server.
DEMO_USERS = [
    ("demo_admin", "demo-admin-pass", Role.ADMIN, True),
    ("demo_annotator", "demo-annotator-pass", Role.ANNOTATOR, False),
    ("demo_annotator2", "demo-annotator2-pass", Role.ANNOTATOR, False),
    ("demo_ml", "demo-ml-pass", Role.ML_ENGINEER, False),
    ("demo_data", "demo-data-pass", Role.DATA_MANAGER, False),
]
LABELS = [
    {"value": 1, "name": "grey matter", "color": "#f5a623"},
    {"value": 2, "name": "white matter", "color": "#4a90e2"},
]
# Axial slice positions (voxel z) through the cerebrum, interleaved so splits never share a slice.
SPLITS = {
    CaseSplit.POOL: list(range(40, 140, 3)),
    CaseSplit.TRAIN: list(range(42, 140, 12)),  # the labelled seed set for the first model
    CaseSplit.VALIDATION: list(range(41, 140, 12)),
    CaseSplit.TEST: list(range(47, 140, 12)),
}


def _nifti_bytes(image: np.ndarray, affine: np.ndarray) -> bytes:
    img = nib.Nifti1Image(image, affine)
    img.header.set_xyzt_units("mm")
    return img.to_bytes()


def _subset_affine(affine: np.ndarray, zs: list[int]) -> np.ndarray:
    """Affine of the evenly spaced slices `zs`: slice spacing = step, origin at the first slice."""
    out = affine.copy()
    out[:3, 2] = affine[:3, 2] * (zs[1] - zs[0])
    out[:3, 3] = affine[:3, :3] @ np.array([0.0, 0.0, zs[0]]) + affine[:3, 3]
    return out


class Command(BaseCommand):
    help = "Create the demo users and the demo project from real images (idempotent)."

    def handle(self, *args, **opts):
        users = self._users()
        project = Project.objects.filter(name=DEMO_PROJECT).first()
        if project is None:
            project = self._project(users)
            self._import(project, users["demo_data"])
            self._first_model(project, users["demo_ml"])
        self.stdout.write(self.style.SUCCESS(f"demo project #{project.pk}: {project.cases.count()} cases"))
        self.stdout.write("demo users (local use only):")
        for username, password, role, _ in DEMO_USERS:
            self.stdout.write(f"  {role:<13} {username:<16} password: {password}")

    def _users(self) -> dict:
        User = get_user_model()
        out = {}
        for username, password, _role, staff in DEMO_USERS:
            user, created = User.objects.get_or_create(username=username)
            if created:
                user.set_password(password)
                user.is_staff = user.is_superuser = staff
                user.save()
            out[username] = user
        return out

    @transaction.atomic
    def _project(self, users: dict[str, User]) -> Project:
        project = project_create(
            creator=users["demo_admin"],
            name=DEMO_PROJECT,
            description="Axial slices of the MNI152 2009 T1 template (nilearn). Segment grey and white matter.",
            modality=Modality.MR,
            label_classes=LABELS,
        )
        for username, _pw, role, _staff in DEMO_USERS:
            Membership.objects.get_or_create(project=project, user=users[username], role=role)
        training_settings_update(
            project=project,
            actor=users["demo_ml"],
            roles={Role.ML_ENGINEER},
            changes={"query_strategy": QueryStrategy.ENTROPY, "auto_retrain_every": 10},
        )
        return project

    def _first_model(self, project: Project, ml_engineer) -> None:
        """Queue the first training run on the seed set; the worker trains it once it starts, then scores
        the pool and computes proposals and explanations for the head of the queue."""
        from workers.services.training import training_run_start

        with transaction.atomic():
            run = training_run_start(project=project, requested_by=ml_engineer, trigger="seed")
        self.stdout.write(f"  queued training run #{run.pk} for the first model (the worker trains it)")

    def _import(self, project: Project, data_manager: User) -> None:
        vol = demo_volume()
        for split, zs in SPLITS.items():
            affine = _subset_affine(vol.affine, zs)
            image = vol.image[:, :, zs]
            payload = _nifti_bytes(image.astype(np.float32), affine)
            mask = None
            if split != CaseSplit.POOL:
                mask = _nifti_bytes(vol.labels[:, :, zs].astype(np.uint8), affine)
            image_import(project=project, user=data_manager, data=payload, mask_data=mask, split=split)
            self.stdout.write(f"  imported {len(zs)} {split} slices")
