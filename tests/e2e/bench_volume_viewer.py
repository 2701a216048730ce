"""Benchmark (not part of the test command; run it by name): the editor's volume panel on a 512 x 512 x 300
CT-like volume in Debian's Chromium. Records the time to the first plane and, while scrolling 100 planes of
the acquired (axial) view and 100 of a resliced (coronal) view one wheel step at a time, each step's latency
(wheel event -> plane on screen, fetch included when the plane was not prefetched) and draw time; then a
fast wheel (100 steps, one every 16 ms, not waiting): how many planes were drawn on the way, the latency of
each drawn plane, and when the last one was on screen.

    HITL_BENCH_JSON=docs/results/volume_viewer.json .venv/bin/pytest tests/e2e/bench_volume_viewer.py -s

Figures go to $HITL_BENCH_JSON (default: print only). The server is the suite's single-threaded live server, so a
prefetch queues behind the plane being read; gunicorn with several threads serves them side by side."""

import json
import os
import platform
from pathlib import Path

import numpy as np
import pytest

from annotations.models import Case, CaseSplit, Image, ImageStatus, Role
from hitl.core.storage import array_to_bytes, bytes_save
from tests.e2e.helpers import server_idle, wait_ready

pytestmark = pytest.mark.e2e
SHAPE = (300, 512, 512)
STEPS = 100


def _volume(project, owner) -> Image:
    rng = np.random.default_rng(0)
    s, h, w = SHAPE
    zz, yy, xx = np.ogrid[:s, :h, :w]
    body = ((yy - h / 2) / (h * 0.42)) ** 2 + ((xx - w / 2) / (w * 0.46)) ** 2 <= 1
    organ = ((yy - h * 0.45) / 60) ** 2 + ((xx - w * 0.35) / 80) ** 2 + ((zz - s / 2) / 90) ** 2 <= 1
    pixels = np.where(body, 40, -1000).astype(np.int16) + np.where(organ, 60, 0).astype(np.int16)
    pixels = (pixels + rng.normal(0, 12, SHAPE)).astype(np.int16)
    data = array_to_bytes(pixels)
    affine = [[0, 0, -0.7, 180.0], [0, -0.7, 0, 180.0], [2.0, 0, 0, -300.0], [0, 0, 0, 1]]
    image = Image.objects.create(
        project=project,
        display_name="bench volume",
        source_kind="nifti",
        modality="CT",
        pixels_path=bytes_save(f"projects/{project.pk}/images/bench/pixels.npy", data),
        shape=list(SHAPE),
        dtype="int16",
        spacing=[0.7, 0.7, 2.0],
        affine=affine,
        window_presets=[{"name": "Soft tissue", "center": 40, "width": 400}],
        content_hash="bench",
        status=ImageStatus.READY,
        created_by=owner,
    )
    Case.objects.bulk_create(
        Case(project=project, image=image, slice_index=k, split=CaseSplit.POOL) for k in range(s)
    )
    return image


def _stats(values: list[float]) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {
        "n": int(v.size),
        "median_ms": round(float(np.median(v)), 2),
        "p95_ms": round(float(np.percentile(v, 95)), 2),
    }


def _scroll(page, view: str) -> dict:
    page.click(f"#volume .volume-views button[data-view={view}]")
    page.wait_for_function("(v) => document.getElementById('volume').dataset.view === v", arg=view)
    start = int(page.evaluate("document.getElementById('volume').dataset.index"))
    page.evaluate("window.hitlEditor.volume.latencies = []; window.hitlEditor.volume.frameTimes = []")
    page.locator("#volume canvas").hover()
    direction = 1 if start + STEPS < page.evaluate("window.hitlEditor.volume.spec.count") else -1
    for step in range(1, STEPS + 1):
        page.mouse.wheel(0, 100 * direction)
        page.wait_for_function(
            "(i) => document.getElementById('volume').dataset.index === String(i)",
            arg=start + direction * step,
        )
    latencies = page.evaluate("window.hitlEditor.volume.latencies")
    draws = page.evaluate("window.hitlEditor.volume.frameTimes")
    return {"latency": _stats(latencies), "draw": _stats(draws)}


BURST_JS = """async ([steps, every]) => {
  const v = window.hitlEditor.volume, canvas = v.root.querySelector("canvas");
  v.latencies = []; v.frameTimes = [];
  const start = v.index, dir = start + steps < v.spec.count ? 1 : -1, target = start + dir * steps;
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) {
    canvas.dispatchEvent(new WheelEvent("wheel", { deltaY: 100 * dir, bubbles: true, cancelable: true }));
    await new Promise((r) => setTimeout(r, every));
  }
  while (v.root.dataset.index !== String(target)) await new Promise((r) => setTimeout(r, 5));
  return { total_ms: performance.now() - t0, drawn: v.frameTimes.length, latencies: v.latencies };
}"""


def _burst(page, view: str, every_ms: int) -> dict:
    """A fast wheel: 100 steps dispatched every `every_ms` without waiting for the planes."""
    page.click(f"#volume .volume-views button[data-view={view}]")
    page.wait_for_function("(v) => document.getElementById('volume').dataset.view === v", arg=view)
    out = page.evaluate(BURST_JS, [STEPS, every_ms])
    return {
        "wheel_every_ms": every_ms,
        "planes_drawn": out["drawn"],
        "total_ms": round(out["total_ms"], 1),
        "scroll_time_ms": STEPS * every_ms,
        "latency": _stats(out["latencies"]),
    }


def test_volume_panel_benchmark(page, login, project, member):
    reader = member(Role.ANNOTATOR, username="reader1")
    with server_idle():
        _volume(project, member(Role.DATA_MANAGER))
    assert reader.pk
    login(page, "reader1")
    page.goto(f"/projects/{project.pk}/annotate/")
    wait_ready(page)
    page.wait_for_selector("#volume:not([hidden])[data-index]")
    first = page.evaluate("window.hitlEditor.volume.firstSlice")
    result = {
        "volume": list(SHAPE),
        "browser": page.context.browser.version,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "first_plane_since_panel_open_ms": round(first["sinceOpenMs"], 1),
        "first_plane_since_navigation_ms": round(first["sinceNavigationMs"], 1),
        "axial": _scroll(page, "axial"),
        "coronal": _scroll(page, "coronal"),
        "axial_fast_wheel": _burst(page, "axial", 16),
        "coronal_fast_wheel": _burst(page, "coronal", 16),
    }
    print("\n" + json.dumps(result, indent=2))
    out = os.environ.get("HITL_BENCH_JSON")
    if out:
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
