"""The one-command GPU training script, run on the CPU for two steps of one footprint member and
of every shipped image classifier: it trains, checkpoints, exports each with its card and
benchmarks inference (the suite's smoke test; on a lent GPU the same command runs with
``--minutes``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.footprint_unet import datasets as D

HAVE_DATA = bool(D.load("crowdai", "train")) and bool(D.load("dubai", "val"))
ROOFS = Path(__file__).resolve().parents[4] / "shared" / "data" / "roofs"
FACADES = Path(__file__).resolve().parents[4] / "shared" / "data" / "facades"


@pytest.mark.skipif(not (HAVE_DATA and ROOFS.is_dir() and FACADES.is_dir()),
                    reason="footprint, roof or façade training sets absent from ../shared/data")
def test_two_cpu_steps_train_export_and_benchmark(tmp_path: Path) -> None:
    from models import train_gpu

    # A budget far above what two steps need: under load the wall clock must not end a run before
    # its two steps (the step cap, not the budget, is what this test pins).
    rc = train_gpu.main(["--minutes", "60", "--out", str(tmp_path), "--members", "1", "--device", "cpu",
                         "--max-steps", "2", "--val-limit", "1", "--bench-px", "512", "--bench-minutes", "0.5"])
    assert rc == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    member = summary["members"][0]
    config = json.loads((Path(member["export"]) / "config.json").read_text())
    assert config["training"]["device"] == "cpu" and config["training"]["step"] == 2
    assert (tmp_path / member["name"] / "ckpt.pt").is_file()
    bench = summary["inference"][0]
    assert bench["mpx_per_s"] > 0 and 0 < bench["share_in_model"] <= 1
    assert [c["name"] for c in summary["classifiers"]] == ["roof_material", "roof_shape", "facade_material"]
    for c in summary["classifiers"]:
        assert "error" not in c, c
        assert c["steps"] == 2
        assert (tmp_path / c["name"] / "ckpt.pt").is_file()
        card = json.loads((Path(c["export"]) / "config.json").read_text())
        assert card["training"]["device"] == "cpu" and card["training"]["steps"] == 2
        assert card["training"]["command"].startswith("python -m models.train_gpu")
        assert (Path(c["export"]) / "model.pt").is_file() and (Path(c["export"]) / "metrics.json").is_file()
    shape = json.loads((Path(summary["classifiers"][1]["export"]) / "config.json").read_text())
    assert shape["tta"] == "d4" and shape["chip_mode"] == "context"  # the served recipe
