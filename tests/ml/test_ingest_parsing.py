"""parse_upload / parse_mask: every bad input gives the right IngestError code; happy paths are exact."""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import os
import random
import struct
import zipfile

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO

from workers.ml.imaging import DeidContext, IngestError, Limits, content_hash, parse_mask, parse_upload
from workers.ml.models.device import limit_cpu_threads

limit_cpu_threads(1)

TEST_FILES = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
CTX = DeidContext(salt=b"ingest-test-salt-0123456789abcdef", date_shift_days=-30)
LIMITS = Limits()


def _raw(name: str) -> bytes:
    with open(os.path.join(TEST_FILES, name), "rb") as fh:
        return fh.read()


def _reviewed(name: str) -> bytes:
    """A bundled file with BurnedInAnnotation "NO" set on a copy (JPGExtended is a quarantined Secondary
    Capture; these tests are about decoding, the quarantine is tested in test_deid.py)."""
    ds = pydicom.dcmread(os.path.join(TEST_FILES, name))
    ds.BurnedInAnnotation = "NO"
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def _dcm_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _zip(members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def _png(arr: np.ndarray, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", **kwargs)
    return buf.getvalue()


def _code(data: bytes, limits: Limits = LIMITS, filename: str = "upload.bin") -> str:
    with pytest.raises(IngestError) as err:
        parse_upload(data, filename, ctx=CTX, limits=limits)
    return err.value.code


# --------------------------------------------------------------------------------------- bad inputs


def test_text_and_random_bytes_are_not_images() -> None:
    assert _code(b"patient: DOE^JOHN\n" * 50, filename="DOE^JOHN.dcm") == "not_an_image"
    assert _code(random.Random(0).randbytes(4096)) == "not_an_image"
    assert _code(b"") == "not_an_image"


def test_error_messages_carry_no_file_name_or_phi() -> None:
    with pytest.raises(IngestError) as err:
        parse_upload(b"hello", "DOE^JOHN_1985-02-03.txt", ctx=CTX, limits=LIMITS)
    assert "DOE" not in str(err.value) and "1985" not in str(err.value)


@pytest.mark.parametrize("cut", [1000, 20000, 39000])
def test_truncated_dicom_is_malformed(cut: int) -> None:
    assert _code(_raw("CT_small.dcm")[:cut]) == "malformed_dicom"


def test_short_pixel_data_is_malformed() -> None:
    assert _code(_raw("MR_truncated.dcm")) == "malformed_dicom"


def test_dicom_without_pixel_data() -> None:
    assert _code(_raw("rtplan.dcm")) == "no_pixel_data"


def test_unsupported_transfer_syntax_from_bundled_file() -> None:
    ds = pydicom.dcmread(os.path.join(TEST_FILES, "JPGExtended.dcm"))  # 12-bit JPEG Extended
    try:
        ds.pixel_array
    except Exception:  # noqa: S110 - expected: no installed decoder handles it
        pass
    else:
        pytest.skip("a 12-bit JPEG decoder is installed here")
    assert _code(_reviewed("JPGExtended.dcm")) == "unsupported_transfer_syntax"


def test_unknown_transfer_syntax_is_unsupported() -> None:
    raw = _raw("CT_small.dcm")
    explicit_le = b"1.2.840.10008.1.2.1\x00"
    assert raw.count(explicit_le) == 1  # in the file meta; replaced by an unknown UID of the same length
    assert _code(raw.replace(explicit_le, b"1.2.840.10008.1.2.99")) == "unsupported_transfer_syntax"


def test_file_over_max_file_bytes() -> None:
    assert _code(_raw("CT_small.dcm"), Limits(max_file_bytes=1000)) == "too_large"


def test_image_over_max_pixels() -> None:
    assert _code(_raw("CT_small.dcm"), Limits(max_pixels=128 * 127)) == "too_large"
    assert _code(_png(np.zeros((64, 64), np.uint8)), Limits(max_pixels=64 * 63)) == "too_large"


@pytest.mark.parametrize(
    "name", ["../x.png", "a/../../x.png", "/etc/x.png", "C:/x.png", "..\\x.png", "a\\b.png"]
)
def test_zip_with_unsafe_paths(name: str) -> None:
    png = _png(np.zeros((8, 8), np.uint8))
    assert _code(_zip([("ok.png", png), (name, png)])) == "unsafe_archive"


def test_zip_with_symlink_member() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("link.png")
        info.create_system = 3
        info.external_attr = 0o120777 << 16  # S_IFLNK
        zf.writestr(info, "/etc/passwd")
    assert _code(buf.getvalue()) == "unsafe_archive"


def test_zip_bomb_over_total_limit() -> None:
    bomb = _zip([("zeros.dcm", bytes(50 << 20))])
    assert len(bomb) < 100_000
    assert _code(bomb, Limits(max_uncompressed_bytes=10 << 20)) == "archive_too_large"


def test_zip_member_with_excessive_ratio() -> None:
    bomb = _zip([("zeros.dcm", bytes(2 << 20))])
    assert _code(bomb, Limits(max_ratio=100)) == "unsafe_archive"


def test_zip_member_that_lies_about_its_size() -> None:
    """Declared 1000 bytes, really 1 MiB: reading stops at the declared size and the member is refused."""
    data = bytearray(_zip([("zeros.dcm", bytes(1 << 20))]))
    local = data.index(b"PK\x03\x04")
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, local + 22, 1000)
    struct.pack_into("<I", data, central + 24, 1000)
    assert _code(bytes(data)) == "unsafe_archive"


def test_zip_with_too_many_members() -> None:
    png = _png(np.zeros((8, 8), np.uint8))
    assert _code(_zip([(f"{i}.png", png) for i in range(4)]), Limits(max_members=3)) == "archive_too_large"


def test_zip_without_images_is_empty() -> None:
    assert _code(_zip([("README.txt", b"hello"), ("plan.dcm", _raw("rtplan.dcm"))])) == "empty_archive"


def test_gzip_bomb_nifti() -> None:
    header = nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4)).to_bytes()
    bomb = gzip.compress(header + bytes(30 << 20), compresslevel=9)
    assert len(bomb) < 100_000
    assert _code(bomb, Limits(max_uncompressed_bytes=5 << 20), "brain.nii.gz") == "archive_too_large"


def test_series_with_different_sizes_is_inconsistent() -> None:
    ct = pydicom.dcmread(os.path.join(TEST_FILES, "CT_small.dcm"))
    mr = pydicom.dcmread(os.path.join(TEST_FILES, "MR_small.dcm"))
    mr.SeriesInstanceUID = ct.SeriesInstanceUID
    assert _code(_zip([("a.dcm", _dcm_bytes(ct)), ("b.dcm", _dcm_bytes(mr))])) == "inconsistent_series"


def test_mask_wrong_shape_and_bad_labels() -> None:
    mask = np.zeros((32, 32), np.uint8)
    mask[4:8, 4:8] = 1
    with pytest.raises(IngestError) as err:
        parse_mask(_png(mask), "m.png", expected_shape=(1, 32, 33), allowed_labels={1}, limits=LIMITS)
    assert err.value.code == "mask_shape_mismatch"
    mask[10:12, 10:12] = 7
    with pytest.raises(IngestError) as err:
        parse_mask(_png(mask), "m.png", expected_shape=(1, 32, 32), allowed_labels={1, 2}, limits=LIMITS)
    assert err.value.code == "mask_labels_invalid"
    rgb = np.stack([mask, mask * 2, mask], axis=-1)
    with pytest.raises(IngestError) as err:
        parse_mask(_png(rgb), "m.png", expected_shape=(1, 32, 32), allowed_labels={1, 7}, limits=LIMITS)
    assert err.value.code == "mask_labels_invalid"


# --------------------------------------------------------------------------------------- happy paths


def test_single_ct_dicom_in_hounsfield_units() -> None:
    ds = pydicom.dcmread(os.path.join(TEST_FILES, "CT_small.dcm"))
    (image,) = parse_upload(_raw("CT_small.dcm"), "x.dcm", ctx=CTX, limits=LIMITS)
    expected = pydicom.pixels.apply_rescale(ds.pixel_array, ds)
    assert image.pixels.shape == (1, 128, 128) and image.pixels.dtype == np.int16
    np.testing.assert_array_equal(image.pixels[0], expected)
    np.testing.assert_array_equal(image.pixels[0], ds.pixel_array.astype(np.int32) - 1024)  # slope 1, -1024
    assert image.modality == "CT" and image.source_kind == "dicom"
    assert image.display_name == "CT series 1"
    assert image.spacing == pytest.approx((0.661468, 0.661468, 5.0))
    back = pydicom.dcmread(io.BytesIO(image.dicom_files[0]))
    assert back.SOPInstanceUID == image.uids.sop_instances[0] != ds.SOPInstanceUID
    assert back.StudyInstanceUID == image.uids.study and back.SeriesInstanceUID == image.uids.series
    assert image.uids.frame_of_reference == back.FrameOfReferenceUID
    np.testing.assert_array_equal(back.pixel_array, ds.pixel_array)


def test_bare_dicom_dataset_without_preamble() -> None:
    ds = pydicom.dcmread(os.path.join(TEST_FILES, "CT_small.dcm"))
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(buf, ds)  # no preamble, no "DICM", no file meta
    assert buf.getvalue()[128:132] != b"DICM"
    (image,) = parse_upload(buf.getvalue(), "bare", ctx=CTX, limits=LIMITS)
    assert image.pixels.shape == (1, 128, 128)
    assert pydicom.dcmread(io.BytesIO(image.dicom_files[0])).PatientIdentityRemoved == "YES"


def _series(n: int = 5) -> tuple[list[Dataset], list[float]]:
    base = pydicom.dcmread(os.path.join(TEST_FILES, "CT_small.dcm"))
    slices, zs = [], []
    for i in range(n):
        ds = copy.deepcopy(base)
        z = float(base.ImagePositionPatient[2]) + 2.5 * i
        ds.ImagePositionPatient = [base.ImagePositionPatient[0], base.ImagePositionPatient[1], z]
        ds.SOPInstanceUID = f"{base.SOPInstanceUID}.{i + 1}"
        ds.InstanceNumber = n - i  # deliberately disagrees with position: position must win
        ds.PixelData = (ds.pixel_array + 10 * i).astype(ds.pixel_array.dtype).tobytes()
        slices.append(ds)
        zs.append(z)
    return slices, zs


def test_zipped_series_sorted_by_position_even_when_shuffled() -> None:
    slices, zs = _series()
    members = [(f"IM{i:04d}", _dcm_bytes(ds)) for i, ds in enumerate(slices)]
    random.Random(3).shuffle(members)
    (image,) = parse_upload(_zip(members), "series.zip", ctx=CTX, limits=LIMITS)
    first = pydicom.pixels.apply_rescale(slices[0].pixel_array, slices[0])
    assert image.pixels.shape == (5, 128, 128) and image.source_kind == "dicom_series"
    for k in range(5):
        np.testing.assert_array_equal(image.pixels[k], first + 10 * k)
    assert image.spacing[2] == pytest.approx(2.5)
    backs = [pydicom.dcmread(io.BytesIO(b)) for b in image.dicom_files]
    assert [float(b.ImagePositionPatient[2]) for b in backs] == pytest.approx(zs)
    assert len({b.StudyInstanceUID for b in backs}) == 1
    assert tuple(b.SOPInstanceUID for b in backs) == image.uids.sop_instances
    affine = np.asarray(image.affine)
    x0, y0 = float(slices[0].ImagePositionPatient[0]), float(slices[0].ImagePositionPatient[1])
    for s, z in enumerate(zs):  # RAS = LPS with x and y negated
        np.testing.assert_allclose(affine @ [s, 0, 0, 1], [-x0, -y0, z, 1], atol=1e-6)
    row_mm = 0.661468
    np.testing.assert_allclose(
        affine @ [0, 3, 2, 1], [-(x0 + 2 * row_mm), -(y0 + 3 * row_mm), zs[0], 1], atol=1e-4
    )


def test_series_without_positions_falls_back_to_instance_number() -> None:
    slices, _ = _series(3)
    for ds in slices:
        del ds.ImagePositionPatient
    (image,) = parse_upload(
        _zip([(f"{i}", _dcm_bytes(d)) for i, d in enumerate(slices)]), "s.zip", ctx=CTX, limits=LIMITS
    )
    first = pydicom.pixels.apply_rescale(slices[0].pixel_array, slices[0])
    for k in range(3):  # InstanceNumber runs 3, 2, 1: slice 2 comes first
        np.testing.assert_array_equal(image.pixels[k], first + 10 * (2 - k))
    assert image.affine is None


def test_png_8_and_16_bit() -> None:
    gray8 = (np.arange(48 * 40).reshape(48, 40) % 251).astype(np.uint8)
    (img,) = parse_upload(_png(gray8), "dir/sub/scan 01.png", ctx=CTX, limits=LIMITS)
    assert img.pixels.dtype == np.uint8 and img.pixels.shape == (1, 48, 40)
    np.testing.assert_array_equal(img.pixels[0], gray8)
    assert (
        img.display_name == "image" and img.source_kind == "png" and img.modality == "OT"
    )  # never the file name
    assert img.uids is None and img.dicom_files == [] and img.affine is None
    gray16 = (np.arange(48 * 40).reshape(48, 40) * 31).astype(np.uint16)
    (img16,) = parse_upload(_png(gray16), "x.png", ctx=CTX, limits=LIMITS)
    assert img16.pixels.dtype == np.uint16
    np.testing.assert_array_equal(img16.pixels[0], gray16)


def test_rgb_tiff_tile_and_16_bit_tiff_with_resolution() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (32, 24, 3), dtype=np.uint8)
    buf = io.BytesIO()
    tifffile.imwrite(buf, rgb, photometric="rgb")
    (img,) = parse_upload(buf.getvalue(), "tile.tif", ctx=CTX, limits=LIMITS)
    assert img.pixels.shape == (1, 32, 24, 3) and img.modality == "PATH" and img.source_kind == "tiff"
    np.testing.assert_array_equal(img.pixels[0], rgb)
    gray = (np.arange(20 * 30).reshape(20, 30) * 97).astype(np.uint16)
    buf = io.BytesIO()
    tifffile.imwrite(buf, gray, resolution=(4000, 2000), resolutionunit=3)  # px per cm: x 4000, y 2000
    (img16,) = parse_upload(buf.getvalue(), "g.tiff", ctx=CTX, limits=LIMITS)
    assert img16.pixels.dtype == np.uint16
    np.testing.assert_array_equal(img16.pixels[0], gray)
    assert img16.spacing == pytest.approx((0.005, 0.0025, 1.0))  # 10 mm / 2000, 10 mm / 4000


def test_multipage_tiff_is_a_stack() -> None:
    stack = np.arange(3 * 8 * 9, dtype=np.uint16).reshape(3, 8, 9)
    buf = io.BytesIO()
    tifffile.imwrite(buf, stack, photometric="minisblack")
    (img,) = parse_upload(buf.getvalue(), "s.tif", ctx=CTX, limits=LIMITS)
    np.testing.assert_array_equal(img.pixels, stack)


def _nifti_volume(affine: np.ndarray) -> nib.Nifti1Image:
    i, j, k = np.meshgrid(np.arange(6), np.arange(5), np.arange(4), indexing="ij")
    return nib.Nifti1Image((i + 10 * j + 100 * k).astype(np.int16), affine)


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("gz", [False, True])
def test_nifti_slices_spacing_and_world_coordinates(flip: bool, gz: bool) -> None:
    affine = np.diag([0.5, 0.75, 2.0, 1.0])
    affine[:3, 3] = [10, -20, 30]
    if flip:  # LPS-stored volume: as_closest_canonical must flip x and y
        affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    source = _nifti_volume(affine)
    data = source.to_bytes()
    (img,) = parse_upload(gzip.compress(data) if gz else data, "a/brain.nii.gz", ctx=CTX, limits=LIMITS)
    assert img.pixels.shape == (4, 5, 6) and img.pixels.dtype == np.int16
    assert img.spacing == pytest.approx((0.75, 0.5, 2.0)) and img.source_kind == "nifti"
    assert img.display_name == "volume"  # never the file name
    volume, out_affine = np.asarray(source.dataobj), np.asarray(img.affine)
    for s, h, w in [(0, 0, 0), (3, 4, 5), (2, 1, 3), (1, 3, 0)]:
        value = img.pixels[s, h, w]
        (i, j, k) = np.argwhere(volume == value)[0]
        np.testing.assert_allclose(out_affine @ [s, h, w, 1], affine @ [i, j, k, 1])
    # Display convention: row index grows posterior, column index grows towards patient left.
    assert (out_affine @ [0, 1, 0, 1])[1] < (out_affine @ [0, 0, 0, 1])[1]
    assert (out_affine @ [0, 0, 1, 1])[0] < (out_affine @ [0, 0, 0, 1])[0]


def test_nifti_mask_matches_image_orientation() -> None:
    affine = np.diag([-0.5, -0.75, 2.0, 1.0])
    image = _nifti_volume(affine)
    labels = (np.asarray(image.dataobj) % 3).astype(np.uint8)
    (img,) = parse_upload(image.to_bytes(), "i.nii", ctx=CTX, limits=LIMITS)
    mask_bytes = gzip.compress(nib.Nifti1Image(labels, affine).to_bytes())
    mask = parse_mask(
        mask_bytes, "m.nii.gz", expected_shape=img.pixels.shape, allowed_labels={1, 2}, limits=LIMITS
    )
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, img.pixels % 3)


def test_png_palette_mask() -> None:
    mask = np.zeros((16, 20), np.uint8)
    mask[2:6, 3:9], mask[8:12, 10:15] = 1, 2
    pal = Image.fromarray(mask, mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    out = parse_mask(buf.getvalue(), "m.png", expected_shape=(16, 20), allowed_labels={1, 2}, limits=LIMITS)
    np.testing.assert_array_equal(out, mask[np.newaxis])


def test_zip_of_pngs_never_uses_member_names() -> None:
    a, b = np.zeros((8, 8), np.uint8), np.full((8, 8), 9, np.uint8)
    images = parse_upload(
        _zip([("x/a.png", _png(a)), ("x/b.png", _png(b)), ("__MACOSX/._a.png", b"junk")]),
        "z.zip",
        ctx=CTX,
        limits=LIMITS,
    )
    assert [i.display_name for i in images] == ["image", "image"]  # member names may carry PHI
    np.testing.assert_array_equal(images[1].pixels[0], b)  # archive order kept


def test_content_hash_same_pixels_same_hash() -> None:
    arr = (np.arange(30 * 20).reshape(30, 20) % 200).astype(np.uint8)
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr)
    (png,) = parse_upload(_png(arr), "a.png", ctx=CTX, limits=LIMITS)
    (tif,) = parse_upload(buf.getvalue(), "a.tif", ctx=CTX, limits=LIMITS)
    assert png.content_hash == tif.content_hash  # same pixels from two formats
    changed = arr.copy()
    changed[0, 0] += 1
    (other,) = parse_upload(_png(changed), "a.png", ctx=CTX, limits=LIMITS)
    assert other.content_hash != png.content_hash
    stacked = arr[np.newaxis]
    manual = hashlib.sha256(
        b"(1, 30, 20)|" + stacked.dtype.str.encode() + b"|" + stacked.tobytes()
    ).hexdigest()
    assert png.content_hash == manual == content_hash(stacked)
    first = parse_upload(_raw("CT_small.dcm"), "a", ctx=CTX, limits=LIMITS)[0]
    again = parse_upload(_raw("CT_small.dcm"), "b", ctx=CTX, limits=LIMITS)[0]
    assert first.content_hash == again.content_hash
    assert content_hash(first.pixels.astype(np.float32)) != first.content_hash  # dtype is part of it


def test_pydicom_warnings_and_logs_do_not_escape(caplog: pytest.LogCaptureFixture) -> None:
    """pydicom quotes values (UIDs, names) in warnings and log records; none may leave the parser."""
    import logging
    import warnings

    names = ("rtdose_1frame.dcm", "JPGExtended.dcm", "badVR.dcm", "MR_truncated.dcm")
    uploads = [(name, _reviewed(name) if name == "JPGExtended.dcm" else _raw(name)) for name in names]
    with caplog.at_level(logging.DEBUG), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name, data in uploads:
            try:
                parse_upload(data, name, ctx=CTX, limits=LIMITS)
            except IngestError:
                pass
    assert [r.getMessage() for r in caplog.records if r.name.startswith("pydicom")] == []
    assert [str(w.message) for w in caught] == []
