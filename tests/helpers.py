import io

import numpy as np
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def png_upload(seed: int = 0, shape=(32, 32), name: str = "img.png") -> SimpleUploadedFile:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, size=shape, dtype=np.uint8)
    return SimpleUploadedFile(name, png_bytes(arr), content_type="image/png")
