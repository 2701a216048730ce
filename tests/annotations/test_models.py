"""Constraints live in the database, not only in Python: bypass validation and the DB still refuses."""

import pytest
from django.db import IntegrityError, transaction

from annotations.models import Annotation, AnnotationKind, Case, Image, Membership, Project, Role
from tests.factories import LABELS, UserFactory


def _image(project, user, content_hash="a" * 64):
    return Image.objects.create(
        project=project,
        display_name="x",
        source_kind="png",
        modality="CT",
        pixels_path="p.npy",
        shape=[1, 4, 4],
        dtype="uint8",
        spacing=[1, 1, 1],
        content_hash=content_hash,
        created_by=user,
    )


def _refuses(fn):
    with pytest.raises(IntegrityError), transaction.atomic():
        fn()


@pytest.mark.django_db
def test_project_readers_per_case_bounds_in_db():
    _refuses(lambda: Project.objects.create(name="p", label_classes=LABELS, readers_per_case=0))
    _refuses(lambda: Project.objects.create(name="q", label_classes=LABELS, readers_per_case=11))
    assert Project.objects.create(name="ok", label_classes=LABELS, readers_per_case=3).pk


@pytest.mark.django_db
def test_membership_role_unique_and_valid(project):
    user = UserFactory()
    Membership.objects.create(project=project, user=user, role=Role.ANNOTATOR)
    _refuses(lambda: Membership.objects.create(project=project, user=user, role=Role.ANNOTATOR))
    _refuses(lambda: Membership.objects.create(project=project, user=user, role="overlord"))
    assert Membership.objects.create(project=project, user=user, role=Role.DATA_MANAGER).pk


@pytest.mark.django_db
def test_image_hash_unique_per_project_and_case_slice_unique(project, other_project):
    user = UserFactory()
    img = _image(project, user)
    _refuses(lambda: _image(project, user))
    assert _image(other_project, user).pk  # same content in another project is fine
    Case.objects.create(project=project, image=img, slice_index=0)
    _refuses(lambda: Case.objects.create(project=project, image=img, slice_index=0))
    _refuses(lambda: Case.objects.create(project=project, image=img, slice_index=1, split="holdout"))


@pytest.mark.django_db
def test_annotation_revisions_unique_and_reader_needs_author(project):
    user = UserFactory()
    case = Case.objects.create(project=project, image=_image(project, user), slice_index=0)
    kw = {"case": case, "mask_path": "m.png", "mask_sha256": "0" * 64}
    Annotation.objects.create(revision=1, author=user, **kw)
    _refuses(lambda: Annotation.objects.create(revision=1, author=user, **kw))
    _refuses(lambda: Annotation.objects.create(revision=2, author=None, kind=AnnotationKind.READER, **kw))
    _refuses(lambda: Annotation.objects.create(revision=0, author=user, **kw))
    _refuses(lambda: Annotation.objects.create(revision=3, author=user, time_spent_s=-1, **kw))
    assert Annotation.objects.create(revision=2, author=None, kind=AnnotationKind.CONSENSUS, **kw).pk
