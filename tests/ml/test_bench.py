"""The benchmark's quick mode runs end to end and reports every row."""

from __future__ import annotations

import json

from workers.ml.research import bench


def test_quick_bench_prints_every_row(tmp_path, capsys):
    out = tmp_path / "bench.json"
    result = bench.main(["--quick", "--threads", "1", "--json", str(out)])
    text = capsys.readouterr().out
    names = [
        "forward batch 1",
        "forward batch 8 (per image)",
        "training step batch 8 (per image)",
        *bench.EXPLAIN_METHODS,
        "MC-dropout scoring T=5 (per image)",
    ]
    for name in names:
        assert name in text
    assert [r["name"] for r in result["rows"]] == names
    assert result["rows"][0]["ratio"] == 1.0
    for row in result["rows"]:
        assert row["ms_per_image"] is None or row["ms_per_image"] > 0
    assert "of raw throughput" in text and "target score_raw_fraction >= 0.8" in text
    scoring = result["scoring"]
    assert scoring["n"] == 8 and scoring["pipeline_seconds"] > 0 and scoring["raw_seconds"] > 0
    assert json.loads(out.read_text())["rows"] == result["rows"]
