import io
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from django.core.management import CommandError, call_command
from pydicom.data import get_testdata_file

from annotations.models import AnnotationKind, Case, Image, Role
from tests.factories import MembershipFactory, UserFactory
from tests.helpers import png_bytes


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "study"
    (root / "series1").mkdir(parents=True)
    for i in range(3):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.ImagePositionPatient = [0.0, 0.0, float(i * 2)]
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.99.{i}"
        ds.save_as(
            root / "series1" / f"IM{i:03d}"
        )  # DICOM files without an extension, as scanners write them
    rng = np.random.default_rng(0)
    (root / "tile.png").write_bytes(png_bytes(rng.integers(0, 255, (20, 30), dtype=np.uint8)))
    masks = tmp_path / "masks"
    masks.mkdir()
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 5:10] = 1
    (masks / "tile_mask.png").write_bytes(png_bytes(mask))
    return root, masks


@pytest.mark.django_db
def test_import_folder_with_series_and_mask(project, folder):
    root, masks = folder
    user = UserFactory(username="dm")
    MembershipFactory(project=project, user=user, role=Role.DATA_MANAGER)
    out = io.StringIO()
    call_command(
        "import_images",
        str(root),
        project=str(project.pk),
        user="dm",
        masks=str(masks),
        stdout=out,
        verbosity=0,
    )
    assert "imported 2 image(s), 0 duplicate(s) reported, 0 failed" in out.getvalue()
    series = Image.objects.get(source_kind="dicom_series")
    assert series.shape[0] == 3 and series.cases.count() == 3
    tile_case = Case.objects.get(image__source_kind="png")
    assert tile_case.current_annotation.kind == AnnotationKind.REFERENCE
    assert tile_case.current_annotation.label_counts == {"0": 575, "1": 25}


@pytest.mark.django_db
def test_import_refuses_users_without_the_role(project, folder):
    root, _ = folder
    user = UserFactory(username="ann")
    MembershipFactory(project=project, user=user, role=Role.ANNOTATOR)
    with pytest.raises(CommandError, match="data manager or admin"):
        call_command("import_images", str(root), project=str(project.pk), user="ann", verbosity=0)
    assert Image.objects.count() == 0


@pytest.mark.django_db
def test_import_reports_bad_files_and_continues(project, folder, tmp_path):
    root, _ = folder
    shutil.rmtree(root / "series1")
    (root / "broken.png").write_bytes(b"not really a png")
    user = UserFactory(username="dm2")
    MembershipFactory(project=project, user=user, role=Role.DATA_MANAGER)
    out = io.StringIO()
    call_command("import_images", str(root), project=str(project.pk), user="dm2", stdout=out, verbosity=0)
    assert "imported 1 image(s), 0 duplicate(s) reported, 1 failed" in out.getvalue()
    assert Path(root / "broken.png").exists() and Image.objects.count() == 1
