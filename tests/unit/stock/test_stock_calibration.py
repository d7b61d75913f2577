"""Calibrated stock intervals (issue 18, item 4): scores, the conformal factor, the stretch of
the MI draws, and the switch in StockOptions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from urbanfabric.errors import InvalidInput
from urbanfabric.stock.calibration import (StockCalibration, conformal_factor, interval_scores,
                                           shipped_calibration, stretch)
from urbanfabric.stock.intensity import MaterialIntensityTable
from urbanfabric.stock.monte_carlo import StockOptions


def test_scores_measure_the_log_stretch_needed() -> None:
    p05, p50, p95 = np.full(6, 10.0), np.full(6, 100.0), np.full(6, 1000.0)
    m = np.array([100.0, 1000.0, 10_000.0, 10.0, 1.0, 50.0])
    np.testing.assert_allclose(interval_scores(m, p05, p50, p95), [0.0, 1.0, 2.0, 1.0, 2.0, np.log(2) / np.log(10)])
    # A lower end of 0 covers every positive value below the median; p95 = p50 covers nothing above.
    assert interval_scores([5.0], [0.0], [10.0], [20.0])[0] == 0.0
    assert np.isinf(interval_scores([30.0], [5.0], [10.0], [10.0])[0])
    # p50 = 0: the draws are not stretched, so only the raw range counts.
    assert interval_scores([3.0], [0.0], [0.0], [4.0])[0] == 0.0
    assert np.isinf(interval_scores([5.0], [0.0], [0.0], [4.0])[0])
    with pytest.raises(InvalidInput):
        interval_scores([0.0], [1.0], [2.0], [3.0])


def test_conformal_factor_rank_and_coverage() -> None:
    s = np.arange(1, 20, dtype=float)  # n = 19: rank ⌈20 · 0.9⌉ = 18
    assert conformal_factor(s, 0.9) == 18.0
    assert np.isinf(conformal_factor(np.arange(1.0, 5.0), 0.9))  # too few for the rank
    rng = np.random.default_rng(1)
    cal, new = rng.exponential(size=3000), rng.exponential(size=30000)
    assert 0.88 <= np.mean(new <= conformal_factor(cal, 0.9)) <= 0.92
    with pytest.raises(InvalidInput):
        conformal_factor(np.array([]), 0.9)


def test_stretch_keeps_the_median_and_zeros() -> None:
    x = np.array([0.0, 10.0, 100.0, 1000.0])
    np.testing.assert_allclose(stretch(x, 100.0, 2.0), [0.0, 1.0, 100.0, 10_000.0])
    np.testing.assert_allclose(stretch(x, 0.0, 2.0), x)  # p50 = 0: untouched


def _table(tmp_path: Path | None = None, factor: float | None = None) -> MaterialIntensityTable:
    t = MaterialIntensityTable.load(source="rasmi")
    if factor is None:
        return t.with_calibration(None)
    return t.with_calibration(StockCalibration(source="rasmi", factors={}, default_factor=factor))


def _stock(table: MaterialIntensityTable, **kw):
    opt = StockOptions(draws=2000, height_strata=1, **kw)
    return table.simulate_stock(np.ones(3), ["RM", "NR", "RS"], ["C", "M", "T"], "OECD_EU15",
                                floors=np.ones(3), options=opt)


def test_simulate_stock_widens_around_the_same_point_estimate() -> None:
    raw, cal = _stock(_table()), _stock(_table(factor=1.5))
    q = _table().intensity("RM", "C", "OECD_EU15").loc["concrete"]
    assert raw.loc[0, "mass_concrete_kg_p95"] == pytest.approx(q.p95, rel=0.01)
    assert cal.loc[0, "mass_concrete_kg_p95"] == pytest.approx(q.p50 * (q.p95 / q.p50) ** 1.5, rel=0.01)
    assert cal.loc[0, "mass_concrete_kg_p05"] == pytest.approx(q.p50 * (q.p05 / q.p50) ** 1.5, rel=0.01)
    for col in ("mass_concrete_kg", "mass_total_kg", "embodied_co2e_kg", "gfa_m2"):
        np.testing.assert_allclose(cal[col], raw[col])  # the point estimate does not move
    for s in ("mass_total_kg", "embodied_co2e_kg", "mass_steel_kg"):
        assert (cal[f"{s}_p95"] - cal[f"{s}_p05"] > raw[f"{s}_p95"] - raw[f"{s}_p05"]).all()
    # Switched off: the raw ranges, exactly.
    off = _stock(_table(factor=1.5), calibrated=False)
    np.testing.assert_array_equal(off.drop(columns="fallback").to_numpy(), raw.drop(columns="fallback").to_numpy())
    # Same input, same output.
    again = _stock(_table(factor=1.5))
    np.testing.assert_array_equal(again.drop(columns="fallback").to_numpy(), cal.drop(columns="fallback").to_numpy())


def test_shipped_calibration_is_on_by_default_for_rasmi_only(tmp_path: Path) -> None:
    cal = shipped_calibration("rasmi")
    assert cal is not None and 1.0 < cal.default_factor < 3.0 and cal.coverage_target == 0.9
    assert cal.provenance["command"].startswith("python -m models.material_intensity.calibrate_stock")
    assert MaterialIntensityTable.load().calibration == cal
    assert MaterialIntensityTable.load(source="heeren-fishman").calibration is None
    default, off = _stock(MaterialIntensityTable.load()), _stock(MaterialIntensityTable.load(), calibrated=False)
    assert (default["mass_total_kg_p95"] > off["mass_total_kg_p95"]).all()
    assert (default["mass_total_kg_p05"] < off["mass_total_kg_p05"]).all()


def test_bad_calibration_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="stock_calibration"):
        StockCalibration(source="rasmi", factors={"concrete": -1.0}, default_factor=1.2)
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"format_version": 99, "sources": {}}))
    with pytest.raises(InvalidInput, match="format_version"):
        StockCalibration.load(p)
    p.write_text(json.dumps({"format_version": 1, "coverage_target": 0.9,
                             "sources": {"rasmi": {"factors": {}, "default_factor": float("nan")}}}))
    with pytest.raises(InvalidInput):
        StockCalibration.load(p)
