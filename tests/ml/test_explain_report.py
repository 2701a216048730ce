import json

from workers.ml.research.explain_report import main


def test_report_writes_table_json_and_plot(tmp_path):
    assert main(["--cases", "1", "--methods", "gradcam,saliency", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["methods"]) == {"gradcam", "saliency"}
    for row in report["methods"].values():
        assert 0 <= row["deletion_auc"] <= 1 and 0 <= row["insertion_auc"] <= 1
        assert 0 <= row["energy_inside"] <= 1 and row["ms"] > 0 and row["x_forward"] > 0
    assert report["surrogate"]["fidelity"] >= 0 and "|" in report["surrogate"]["rules"]
    table = (tmp_path / "table.md").read_text()
    assert "Grad-CAM" in table and "surrogate" in table
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
