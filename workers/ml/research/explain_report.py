"""python -m workers.ml.research.explain_report [--cases 4] [--out DIR] [--methods a,b]

The explanation quality report on a small real task: a UNet (and an AttentionUnet when "attention" is
asked for) trained on MNI152 white matter, explained on held-out slices (workers.ml.explain.report builds
the report; the service runs the same builder on a project's own model and cases)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from workers.ml.explain.report import FAMILIES, markdown_table, plot_png, report_build
from workers.ml.models.device import limit_cpu_threads
from workers.ml.research.wm_task import load_wm_slices, train_wm_model


def run(*, cases: int, out: Path, methods: list[str]) -> dict:
    """The CLI's report: a UNet (and an AttentionUnet when "attention" is asked for) trained on MNI152
    white matter, explained on `cases` held-out slices; writes report.json, table.md and report.png."""
    limit_cpu_threads(1)
    data = load_wm_slices()
    unet = train_wm_model(data)
    attention = train_wm_model(data, arch="attention_unet") if "attention" in methods else None
    _, _, images, masks = data.split()
    built = report_build(
        unet.model,
        list(images[:cases]),
        list(masks[:cases]),
        methods=methods,
        progress=lambda done, total, m: print(f"[{done}/{total}] {m}", flush=True),
        method_models={"attention": attention.model} if attention else None,
        surrogate_cases=(list(data.images), list(data.masks)),
    )
    for method, row in built["methods"].items():
        print(f"{method:22s} " + " ".join(f"{k}={v:.3f}" for k, v in row.items()), flush=True)
    report = {
        "task": "MNI152 white matter, 96x96 axial slices",
        "held_out_dice": {
            "unet": unet.held_out_dice,
            "attention_unet": attention.held_out_dice if attention else None,
        },
        **built,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "table.md").write_text(markdown_table(report))
    plot(report, out / "report.png")
    return report


def plot(report: dict, path: Path) -> None:
    Path(path).write_bytes(plot_png(report))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("artifacts/explain_report"))
    parser.add_argument("--methods", default=",".join(FAMILIES))
    args = parser.parse_args(argv)
    run(cases=args.cases, out=args.out, methods=[m for m in args.methods.split(",") if m])
    print(f"wrote {args.out / 'table.md'}, report.json and report.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
