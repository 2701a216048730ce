"""Synthetic segmentation phantoms with exact label masks, for fast tests and scale benchmarks.

Each case is a 2-D "body" (a large ellipse) holding a few objects (wobbly ellipses) whose label map is
known exactly, because image and mask come from the same geometric predicate. Intensities imitate
CT (Hounsfield units), MR (arbitrary positive units with a multiplicative bias field and Rician-like
noise) or RGB pathology (H&E-like pink background, purple nuclei-like blobs on a jittered grid).

Contracts:
- Case ``i`` depends only on ``(seed, i, spec)``: the same case comes out whatever the chunking, so a
  10,000-case pool can be produced lazily with `iter_phantoms` and still be reproducible.
- Geometry, noise and bias are evaluated on whole batches with numpy broadcasting (no per-pixel
  Python loops); only the handful of per-case parameters are drawn in Python.
- Raw outputs: CT float32 HU, MR float32 >= 0, RGB uint8 (H, W, 3). Masks uint8 (H, W), 0 = background,
  labels 1..num_classes-1. Feed images to `workers.ml.models.transforms.prepare_image(raw, spec.modality)`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

MODALITIES = ("CT", "MR", "RGB")

# Mean intensity per label (index 0 = body background tissue), in the modality's raw units.
_CT_HU = (40.0, 160.0, -80.0, 300.0, -300.0)
_MR_LEVEL = (300.0, 650.0, 120.0, 900.0, 480.0)
# H&E-like colours: background (eosin pink) then nuclei classes (haematoxylin purples).
_RGB = ((228.0, 178.0, 206.0), (92.0, 56.0, 140.0), (150.0, 70.0, 110.0), (60.0, 40.0, 90.0))


@dataclass(frozen=True)
class PhantomSpec:
    """What to generate. ``num_classes`` counts background; ``max_objects`` per case for CT/MR."""

    size: tuple[int, int] = (256, 256)
    modality: str = "MR"
    num_classes: int = 2
    max_objects: int = 3
    noise: float = 0.05  # noise std as a fraction of the tissue contrast
    bias: float = 0.25  # strength of the smooth multiplicative bias field (MR) / additive drift (CT)
    nucleus_cell: int = 24  # RGB: grid cell size in pixels; at most one nucleus per cell

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        limit = len(_RGB) if self.modality == "RGB" else len(_CT_HU)
        if not 2 <= self.num_classes <= limit:
            raise ValueError(f"num_classes must be in 2..{limit} for {self.modality}")


@dataclass(frozen=True)
class PhantomBatch:
    images: np.ndarray  # (N, H, W) float32 for CT/MR, (N, H, W, 3) uint8 for RGB
    masks: np.ndarray  # (N, H, W) uint8


def make_phantoms(n: int, *, seed: int = 0, start: int = 0, spec: PhantomSpec | None = None) -> PhantomBatch:
    """Cases ``start .. start+n-1`` of the stream identified by ``seed``."""
    spec = spec or PhantomSpec()
    h, w = spec.size
    rgb = spec.modality == "RGB"
    images = np.empty((n, h, w, 3) if rgb else (n, h, w), dtype=np.uint8 if rgb else np.float32)
    masks = np.empty((n, h, w), dtype=np.uint8)
    bank = _noise_bank(seed, spec.size, 3 if rgb else 1)
    # Small groups keep the (group, H, W) temporaries in cache: ~10x faster than one huge broadcast.
    for g0 in range(0, n, _GROUP):
        rngs = [np.random.default_rng([seed, start + i]) for i in range(g0, min(n, g0 + _GROUP))]
        part = _pathology(rngs, spec, bank) if rgb else _radiology(rngs, spec, bank)
        images[g0 : g0 + len(rngs)] = part.images
        masks[g0 : g0 + len(rngs)] = part.masks
    return PhantomBatch(images=images, masks=masks)


def iter_phantoms(
    n: int, *, seed: int = 0, spec: PhantomSpec | None = None, chunk: int = 256
) -> Iterator[PhantomBatch]:
    """Yield ``n`` cases in chunks (bounded memory); identical to one `make_phantoms(n)` call."""
    for start in range(0, n, chunk):
        yield make_phantoms(min(chunk, n - start), seed=seed, start=start, spec=spec)


def make_phantom(
    index: int, *, seed: int = 0, spec: PhantomSpec | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One case as ``(raw_image, mask)``."""
    batch = make_phantoms(1, seed=seed, start=index, spec=spec)
    return batch.images[0], batch.masks[0]


_GROUP = 4


@lru_cache(maxsize=4)
def _noise_bank(seed: int, size: tuple[int, int], channels: int) -> np.ndarray:
    """White Gaussian noise (2H, 2W[, C]) shared by a stream; cases take random shifted/flipped windows.

    Drawing fresh normals costs ~12 ns per value here, more than all the geometry together; windows of
    one bank keep every case's noise white and Gaussian at the price of correlation between cases,
    which does not matter for phantoms.
    """
    h, w = size
    shape = (2 * h, 2 * w) if channels == 1 else (2 * h, 2 * w, channels)
    bank = np.random.default_rng([seed, _BANK_TAG]).standard_normal(shape, dtype=np.float32)
    bank.flags.writeable = False
    return bank


_BANK_TAG = 2**40  # keeps the bank's seed apart from the per-case seeds [seed, index]


def _noise(rngs: list[np.random.Generator], bank: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One noise window per case, (N, H, W[, C])."""
    h, w = size
    out = []
    for r in rngs:
        oy, ox = r.integers(0, h), r.integers(0, w)
        win = bank[oy : oy + h, ox : ox + w]
        flip_y, flip_x = r.random() < 0.5, r.random() < 0.5
        out.append(win[:: -1 if flip_y else 1, :: -1 if flip_x else 1])
    return np.stack(out)


def _grid(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Normalised coordinates in [-1, 1], shapes (1, H, 1) and (1, 1, W) for broadcasting."""
    h, w = size
    yy = np.linspace(-1.0, 1.0, h, dtype=np.float32)[None, :, None]
    xx = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, None, :]
    return yy, xx


def _col(values: list[float] | np.ndarray) -> np.ndarray:
    """Per-case parameters as (N, 1, 1) float32 so they broadcast against (N, H, W)."""
    return np.asarray(values, dtype=np.float32)[:, None, None]


def _ellipse_level(
    yy: np.ndarray,
    xx: np.ndarray,
    cy: np.ndarray,
    cx: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    theta: np.ndarray,
) -> np.ndarray:
    """Level function of rotated ellipses: < 1 inside. Parameters are (N, 1, 1) or broadcastable.

    The rotated coordinates are sums of a y-only and an x-only term, computed on (N, H, 1) and
    (N, 1, W) first, so only the final adds and squares touch every pixel.
    """
    dy, dx = yy - cy, xx - cx
    cos, sin = np.cos(theta), np.sin(theta)
    u = (dx * (cos / a)) + (dy * (sin / a))
    v = (dy * (cos / b)) - (dx * (sin / b))
    return u * u + v * v


def _wobble(yy: np.ndarray, xx: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Separable low-frequency perturbation (N, H, W): sin(fy*y + py) * sin(fx*x + px) * amp.

    Separable so that the sines cost O(H + W) per case, not O(H * W); only the product is per pixel.
    """
    amp, fy, py, fx, px = (p[:, i][:, None, None] for i in range(5))
    return amp * np.sin(fy * yy + py) * np.sin(fx * xx + px)


def _bias_field(yy: np.ndarray, xx: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Smooth quadratic field (N, H, W), roughly zero-mean, coefficients c (N, 5).

    Grouped as f(y) + g(x) + c2*y*x so only three operations run per pixel.
    """
    c0, c1, c2, c3, c4 = (c[:, i][:, None, None] for i in range(5))
    fy = c0 * yy + c3 * (yy * yy - 0.33)
    gx = c1 * xx + c4 * (xx * xx - 0.33)
    return (fy + gx) + c2 * (yy * xx)


def _object_params(r: np.random.Generator, j: int, num_classes: int) -> tuple[float, ...]:
    """Object j of one case: centre, semi-axes, angle, wobble (amp, fy, py, fx, px), class."""
    present = j == 0 or r.random() < 0.7  # every case has at least one object
    cls = 1 + (j + int(r.integers(0, num_classes - 1))) % (num_classes - 1)
    cy, cx = r.uniform(-0.45, 0.45), r.uniform(-0.45, 0.45)
    if not present:
        cy = cx = 10.0  # far off the canvas: an empty object without a per-pixel mask
    return (cy, cx, r.uniform(0.08, 0.3), r.uniform(0.08, 0.3), r.uniform(0, np.pi)) + (
        r.uniform(0.05, 0.25),
        r.uniform(2, 7),
        r.uniform(0, 6.3),
        r.uniform(2, 7),
        r.uniform(0, 6.3),
        cls,
    )


def _radiology(rngs: list[np.random.Generator], spec: PhantomSpec, bank: np.ndarray) -> PhantomBatch:
    n = len(rngs)
    yy, xx = _grid(spec.size)
    # Body: big centred ellipse; everything outside it is air (label 0 there too).
    bp = np.asarray(
        [
            (r.uniform(-0.05, 0.05), r.uniform(-0.05, 0.05), r.uniform(0.8, 0.95), r.uniform(0.7, 0.9), 0.0)
            for r in rngs
        ],
        dtype=np.float32,
    )
    inside_body = _ellipse_level(yy, xx, *(_col(bp[:, i]) for i in range(5))) < 1.0
    labels = np.zeros((n, *spec.size), dtype=np.uint8)
    for j in range(spec.max_objects):
        geo = np.asarray([_object_params(r, j, spec.num_classes) for r in rngs], dtype=np.float32)
        level = _ellipse_level(yy, xx, *(_col(geo[:, i]) for i in range(5)))
        level += _wobble(yy, xx, geo[:, 5:10])
        labels = np.where(level < 1.0, _col(geo[:, 10]).astype(np.uint8), labels)  # later objects on top
    labels *= inside_body
    lut = np.asarray(_CT_HU if spec.modality == "CT" else _MR_LEVEL, dtype=np.float32)
    gain = _col([r.uniform(0.9, 1.1) for r in rngs])
    clean = lut[labels] * gain
    coeffs = np.asarray([r.uniform(-1, 1, size=5) for r in rngs], dtype=np.float32) * spec.bias
    field = _bias_field(yy, xx, coeffs)
    noise = _noise(rngs, bank, spec.size)
    if spec.modality == "CT":
        sigma = spec.noise * 200.0
        img = np.where(inside_body, clean + field * 100.0, -1000.0) + sigma * noise
    else:
        sigma = spec.noise * 300.0
        signal = (clean * (1.0 + field)) * inside_body
        # Magnitude image: |signal + noise| is folded-normal (Rician-like), positive in the air.
        img = np.abs(signal + sigma * noise)
    return PhantomBatch(images=img.astype(np.float32, copy=False), masks=labels)


def _pathology(rngs: list[np.random.Generator], spec: PhantomSpec, bank: np.ndarray) -> PhantomBatch:
    """Nuclei-like blobs, at most one per grid cell, so cost is O(pixels) whatever their number.

    The canvas is viewed as (N, gh, cell, gw, cell) so per-cell parameters of shape (N, gh, 1, gw, 1)
    broadcast onto their own pixels without being expanded to full resolution.
    """
    n = len(rngs)
    h, w = spec.size
    cell = spec.nucleus_cell
    gh, gw = -(-h // cell), -(-w // cell)
    draws = []
    for r in rngs:
        present = r.random((gh, gw)) < 0.55
        cy = np.where(present, r.uniform(0.3 * cell, 0.7 * cell, (gh, gw)), 1e4)  # absent: far away
        cx = r.uniform(0.3 * cell, 0.7 * cell, (gh, gw))
        a, b = r.uniform(0.18 * cell, 0.32 * cell, (gh, gw)), r.uniform(0.14 * cell, 0.28 * cell, (gh, gw))
        draws.append(
            np.stack([cy, cx, a, b, r.uniform(0, np.pi, (gh, gw)), r.integers(1, spec.num_classes, (gh, gw))])
        )
    par = np.asarray(draws, dtype=np.float32)[:, :, :, None, :, None]  # (N, 6, gh, 1, gw, 1)
    ly = np.arange(cell, dtype=np.float32)[None, None, :, None, None]
    lx = np.arange(cell, dtype=np.float32)[None, None, None, None, :]
    level = _ellipse_level(ly, lx, par[:, 0], par[:, 1], par[:, 2], par[:, 3], par[:, 4])
    labels = np.where(level < 1.0, par[:, 5].astype(np.uint8), np.uint8(0))
    labels = labels.reshape(n, gh * cell, gw * cell)[:, :h, :w]
    colours = np.asarray(_RGB[: spec.num_classes], dtype=np.float32)
    img = colours[labels]  # (N, H, W, 3)
    yy, xx = _grid(spec.size)
    coeffs = np.asarray([r.uniform(-1, 1, size=5) for r in rngs], dtype=np.float32) * spec.bias
    stain = 1.0 + _bias_field(yy, xx, coeffs)  # uneven staining
    img *= stain[..., None]
    img += (spec.noise * 120.0) * _noise(rngs, bank, spec.size)
    np.clip(img, 0, 255, out=img)
    return PhantomBatch(images=img.astype(np.uint8), masks=np.ascontiguousarray(labels))
