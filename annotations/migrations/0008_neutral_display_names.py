"""Images imported before file names stopped naming them get neutral, numbered names: upload file names
often carry patient names, record numbers and birth dates (e.g. DOE_JOHN_MRN123456_19650412.png)."""

from django.db import migrations

DICOM_KINDS = ("dicom", "dicom_series")


def neutral_names(apps, schema_editor):
    Image = apps.get_model("annotations", "Image")
    numbers: dict[int, int] = {}
    for image in Image.objects.order_by("project_id", "id").only("id", "project_id", "source_kind"):
        numbers[image.project_id] = numbers.get(image.project_id, 0) + 1
        prefix = "series" if image.source_kind in DICOM_KINDS else "image"
        Image.objects.filter(pk=image.pk).update(display_name=f"{prefix}-{numbers[image.project_id]:04d}")


class Migration(migrations.Migration):
    dependencies = [("annotations", "0007_import_job")]

    operations = [migrations.RunPython(neutral_names, migrations.RunPython.noop)]
