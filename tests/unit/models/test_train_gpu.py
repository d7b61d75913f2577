"""The one-command GPU training script, run on the CPU for two steps of one member: it trains,
checkpoints, exports a member with its card and benchmarks inference (the suite's smoke test;
on a lent GPU the same command runs with ``--minutes``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.footprint_unet import datasets as D

HAVE_DATA = bool(D.load("crowdai", "train")) and bool(D.load("dubai", "val"))


@pytest.mark.skipif(not HAVE_DATA, reason="footprint training sets absent from ../shared/data")
def test_two_cpu_steps_train_export_and_benchmark(tmp_path: Path) -> None:
    from models import train_gpu

    rc = train_gpu.main(["--minutes", "3", "--out", str(tmp_path), "--members", "1", "--device", "cpu",
                         "--max-steps", "2", "--val-limit", "1", "--bench-px", "512", "--bench-minutes", "0.5"])
    assert rc == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    member = summary["members"][0]
    config = json.loads((Path(member["export"]) / "config.json").read_text())
    assert config["training"]["device"] == "cpu" and config["training"]["step"] == 2
    assert (tmp_path / member["name"] / "ckpt.pt").is_file()
    bench = summary["inference"][0]
    assert bench["mpx_per_s"] > 0 and 0 < bench["share_in_model"] <= 1
