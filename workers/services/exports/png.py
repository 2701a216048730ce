"""PNG export: the stored 8-bit label PNG of each revision, byte for byte (its hash was checked on load)."""

from __future__ import annotations

from workers.services.exports.common import Item, ZipOut


def write_png(out: ZipOut, items: list[Item], tick) -> None:
    for item in items:
        case = item.ann.case
        name = f"masks/png/image-{case.image_id}/slice-{case.slice_index:05d}_rev-{item.ann.id}.png"
        item.files["png"] = out.add(name, item.png, compress=False)
        tick()
