"""Server-rendered plots of the agreement pages: small SVG builders (nothing from a CDN) and a mask
overlay as a PNG data URI."""

import base64
import io
from collections.abc import Sequence

import numpy as np
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from PIL import Image as PILImage

from annotations.render import apply_window, auto_window
from annotations.selectors.agreement import DICE_BINS, ReaderStats

W, H, PAD = 420, 220, 36
PALETTE = ["#0b5cad", "#c2410c", "#15803d", "#7c3aed", "#be123c", "#0e7490", "#a16207", "#4d7c0f"]


def _svg(body: str, title: str, width: int = W, height: int = H) -> SafeString:
    # Safe: numbers are formatted by us, every text (usernames, titles) went through escape().
    return mark_safe(  # noqa: S308
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" class="plot"><title>{escape(title)}</title>'
        f'<rect width="{width}" height="{height}" fill="#fff"/>{body}</svg>'
    )


def _axes(y_label: str, x_label: str, y_scale: float = 1.0) -> str:
    y0, x1 = H - PAD, W - 10
    ticks = "".join(
        f'<line x1="{PAD - 4}" x2="{x1}" y1="{_y(v):.1f}" y2="{_y(v):.1f}" stroke="#e5e7eb"/>'
        f'<text x="{PAD - 6}" y="{_y(v) + 4:.1f}" font-size="10" text-anchor="end">{v * y_scale:.3g}</text>'
        for v in (0.0, 0.25, 0.5, 0.75, 1.0)
    )
    return (
        f'{ticks}<line x1="{PAD}" y1="10" x2="{PAD}" y2="{y0}" stroke="#333"/>'
        f'<line x1="{PAD}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#333"/>'
        f'<text x="12" y="{H / 2}" font-size="11" transform="rotate(-90 12 {H / 2})" '
        f'text-anchor="middle">{escape(y_label)}</text>'
        f'<text x="{(PAD + x1) / 2}" y="{H - 6}" font-size="11" text-anchor="middle">{escape(x_label)}</text>'
    )


def _y(v: float) -> float:
    """Value in [0, 1] to the plot's y coordinate."""
    return (H - PAD) - float(np.clip(v, 0, 1)) * (H - PAD - 10)


def _x(i: float, n: int) -> float:
    return PAD + (W - 10 - PAD) * (i + 0.5) / max(n, 1)


def histogram_svg(counts: Sequence[int]) -> SafeString:
    top = max(max(counts, default=0), 1)
    bw = (W - 10 - PAD) / DICE_BINS
    bars = "".join(
        f'<rect x="{PAD + i * bw + 1:.1f}" y="{_y(c / top):.1f}" width="{bw - 2:.1f}" '
        f'height="{(H - PAD) - _y(c / top):.1f}" fill="#0b5cad"><title>{i / DICE_BINS:.1f}-'
        f"{(i + 1) / DICE_BINS:.1f}: {c}</title></rect>"
        for i, c in enumerate(counts)
    )
    labels = "".join(
        f'<text x="{PAD + i * bw:.1f}" y="{H - PAD + 12}" font-size="9" text-anchor="middle">{i / 10:.1f}</text>'
        for i in range(0, DICE_BINS + 1, 2)
    )
    return _svg(
        _axes("reader pairs", "pairwise Dice", y_scale=top) + bars + labels, "distribution of pairwise Dice"
    )


def readers_svg(readers: Sequence[ReaderStats]) -> SafeString:
    rows = [(r, r.mean_dice) for r in readers if r.mean_dice is not None]
    body = []
    for i, (r, mean) in enumerate(rows):
        x, color = _x(i, len(rows)), PALETTE[i % len(PALETTE)]
        lo, hi = r.dice_ci or (mean, mean)
        body.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_y(lo):.1f}" y2="{_y(hi):.1f}" stroke="{color}" '
            f'stroke-width="2"/><circle cx="{x:.1f}" cy="{_y(mean):.1f}" r="4" fill="{color}">'
            f"<title>{escape(r.username)}: {mean:.3f} [{lo:.3f}, {hi:.3f}]</title></circle>"
            f'<text x="{x:.1f}" y="{H - PAD + 12}" font-size="10" text-anchor="middle">'
            f"{escape(r.username[:12])}</text>"
        )
    return _svg(
        _axes("Dice vs consensus", "reader (95% bootstrap CI)") + "".join(body),
        "reader Dice vs consensus",
    )


def trend_svg(readers: Sequence[ReaderStats]) -> SafeString:
    longest = max((len(r.trend) for r in readers), default=0)
    body = []
    for i, r in enumerate(readers):
        if not r.trend:
            continue
        color = PALETTE[i % len(PALETTE)]
        points = " ".join(f"{_x(j, longest):.1f},{_y(p['rolling']):.1f}" for j, p in enumerate(r.trend))
        body.append(
            f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2">'
            f"<title>{escape(r.username)}</title></polyline>"
            + "".join(
                f'<circle cx="{_x(j, longest):.1f}" cy="{_y(p["dice"]):.1f}" r="2.5" fill="{color}"/>'
                for j, p in enumerate(r.trend)
            )
        )
    return _svg(
        _axes("Dice vs consensus", f"reads, oldest first (rolling mean of {5})") + "".join(body),
        "reader Dice trend over time",
    )


def model_svg(agreements) -> SafeString:
    rows = [a for a in agreements if a.model_dice_vs_consensus is not None]
    body = []
    for i, a in enumerate(rows):
        dices = [r.dice_vs_consensus for r in a.readers.all()]
        x = _x(i, len(rows))
        color = "#15803d" if a.model_within_spread else "#be123c"
        body.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_y(min(dices)):.1f}" y2="{_y(max(dices)):.1f}" '
            f'stroke="#9ca3af" stroke-width="6"/><circle cx="{x:.1f}" cy="{_y(a.model_dice_vs_consensus):.1f}" '
            f'r="4" fill="{color}"><title>case {a.case_id}: model {a.model_dice_vs_consensus:.3f}</title></circle>'
        )
    return _svg(
        _axes("Dice vs consensus", "case (grey: readers' range, dot: model)") + "".join(body),
        "model vs readers",
    )


def overlay_data_uri(
    pixels: np.ndarray, mask: np.ndarray | None, colors: dict[int, str], max_px: int = 384
) -> str:
    """The slice with `mask` blended in its label colours, as a PNG data URI (at most `max_px` a side)."""
    if pixels.ndim == 2:
        grey = apply_window(pixels, *auto_window(pixels))
        rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    else:
        rgb = np.clip(pixels, 0, 255).astype(np.float32)
    if mask is not None and mask.shape == rgb.shape[:2]:
        for value, color in colors.items():
            sel = mask == value
            tint = np.array([int(color[k : k + 2], 16) for k in (1, 3, 5)], dtype=np.float32)
            rgb[sel] = 0.45 * rgb[sel] + 0.55 * tint
    img = PILImage.fromarray(rgb.astype(np.uint8), mode="RGB")
    img.thumbnail((max_px, max_px))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
