"""Footprint evaluation: the SpaceNet instance scorer, targets, ensemble vote, data splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from shapely.geometry import box

from models.common.metrics import mask_instances, match_instances
from models.footprint_unet import datasets as D
from models.footprint_unet.targets import building_from_classes, signed_distance_classes
from urbanfabric.footprints.polygons import landcover_filter

SPACENET = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "footprints" / "spacenet-atlanta"


def test_matching_is_one_to_one_and_greedy_by_confidence():
    truth = [box(0, 0, 10, 10)]
    # Two predictions overlap the same building well; only one may match it.
    preds = [box(0, 0, 10, 9), box(0, 1, 10, 10)]
    s = match_instances(truth, preds)
    assert (s.tp, s.fp, s.fn) == (1, 1, 0)
    # The more confident one is matched first (IoU 0.9 either way; check via the FP count
    # with a poor high-confidence prediction that must not steal the match).
    preds = [box(0, 0, 10, 4), box(0, 0, 10, 9)]
    s = match_instances(truth, preds, confidences=[0.9, 0.1])
    assert (s.tp, s.fp, s.fn) == (1, 1, 0) and s.matched_iou == [pytest.approx(0.9)]


def test_iou_threshold_and_area_filter():
    truth = [box(0, 0, 10, 10), box(20, 20, 22, 22)]  # second is 4 area units
    preds = [box(0, 0, 10, 4.9)]  # IoU 0.49 < 0.5
    s = match_instances(truth, preds, min_area=5)
    assert (s.tp, s.fp, s.fn) == (0, 1, 1)
    assert match_instances(truth, [box(0, 0, 10, 5)], min_area=5).tp == 1  # IoU exactly 0.5


def test_mask_instances_components():
    m = np.zeros((20, 20), np.uint8)
    m[1:5, 1:5] = 1
    m[10:15, 10:18] = 1
    polys = mask_instances(m)
    assert sorted(p.area for p in polys) == [16, 40]


def _wkt_rows(path: Path):
    import pandas as pd
    from shapely import wkt

    frame = pd.read_csv(path)
    return frame, {img: [wkt.loads(w) for w in g.PolygonWKT_Pix if "EMPTY" not in w]
                   for img, g in frame.groupby("ImageId")}


def _optimal_tp(truth, preds, min_area):
    """Maximum one-to-one matching at IoU ≥ 0.5 (Hungarian), an independent reference."""
    truth = [t for t in truth if t.area >= min_area]
    preds = [p for p in preds if p.area > min_area]
    if not truth or not preds:
        return 0
    iou = np.zeros((len(preds), len(truth)))
    for i, p in enumerate(preds):
        for j, t in enumerate(truth):
            inter = p.intersection(t).area
            iou[i, j] = inter / (p.area + t.area - inter) if inter else 0.0
    ok = (iou >= 0.5).astype(float)
    r, c = linear_sum_assignment(-ok)
    return int(ok[r, c].sum())


@pytest.mark.skipif(not (SPACENET / "SN2_sample_truth.csv").exists(), reason="shared SpaceNet sample absent")
def test_spacenet_sn2_sample_scores():
    truth_frame, truth = _wkt_rows(SPACENET / "SN2_sample_truth.csv")
    pred_frame, _ = _wkt_rows(SPACENET / "SN2_sample_preds.csv")
    from shapely import wkt

    tp = fp = fn = 0
    for img in sorted(set(truth_frame.ImageId) | set(pred_frame.ImageId)):
        rows = pred_frame[pred_frame.ImageId == img]
        preds = [wkt.loads(w) for w in rows.PolygonWKT_Pix]
        s = match_instances(truth.get(img, []), preds, min_area=20, confidences=list(rows.Confidence))
        # Greedy matching must equal the optimal one-to-one matching at IoU ≥ 0.5.
        assert s.tp == _optimal_tp(truth.get(img, []), preds, 20), img
        tp, fp, fn = tp + s.tp, fp + s.fp, fn + s.fn
    # 6 images; a many-to-one matching would raise TP, ignoring the area filter would change FP/FN.
    assert (tp, fp, fn) == (87, 57, 82)
    f1 = 2 * tp / (2 * tp + fp + fn)
    assert f1 == pytest.approx(0.5559, abs=1e-4)


@pytest.mark.skipif(not (SPACENET / "gt.geojson").exists(), reason="shared SpaceNet sample absent")
def test_spacenet_geojson_scores():
    import geopandas as gpd

    gt = gpd.read_file(SPACENET / "gt.geojson")
    pred = gpd.read_file(SPACENET / "pred.geojson")
    s = match_instances(list(gt.geometry), list(pred.geometry))
    assert (s.tp, s.fp, s.fn) == (8, 20, 20)
    assert s.f1 == pytest.approx(8 / 28)
    assert s.tp == _optimal_tp(list(gt.geometry), list(pred.geometry), 0)


def test_signed_distance_classes_roundtrip_and_truncation():
    m = np.zeros((60, 60), np.uint8)
    m[10:50, 10:50] = 1
    c = signed_distance_classes(m)
    assert c.min() == 0 and c.max() == 10
    assert (building_from_classes(c) == m).all()
    assert c[30, 30] == 10 and c[0, 59] == 0  # deep inside / far outside saturate
    assert c[10, 30] == 6 and c[9, 30] == 5  # the two sides of the boundary
    assert (signed_distance_classes(np.zeros((5, 5))) == 0).all()


def test_landcover_filter_is_urban_aware():
    prob = np.full((1, 3), 0.9, np.float32)
    lc = np.array([[10, 60, 80]])  # cropland, water, impervious
    classes = {10: "cropland", 60: "water", 80: "impervious"}
    urban = landcover_filter(prob, lc, classes)  # weak rules: only vegetation vetoes
    assert urban.tolist() == [[0.0, pytest.approx(0.9), pytest.approx(0.9)]]
    rural = landcover_filter(prob, lc, classes, urban=np.zeros((1, 3), bool))
    assert rural.tolist() == [[0.0, 0.0, pytest.approx(0.9)]]


def test_splits_are_disjoint_by_location():
    assert {D.dubai_split(f"t{i}") for i in range(1, 9)} == {"train", "val", "test"}
    names = [f"{i:012d}.jpg" for i in range(200)]
    splits = [D.crowdai_split(n) for n in names]
    assert splits == [D.crowdai_split(n) for n in names]  # deterministic
    assert 0.4 < splits.count("train") / 200 < 0.8
    assert D.SPACENET_TRAIN_COLS[1] < D.SPACENET_TEST_COLS[0]  # a gap between the strips


def _tiny_model_and_mask(tmp_path) -> np.ndarray:
    """An untrained binary U-Net exported to ``tmp_path / "v1"``; the label mask for its scenes."""
    import torch

    from models.footprint_unet.net import build_model
    from models.footprint_unet.train import export
    from models.footprint_unet.train_multi import arch_config

    torch.manual_seed(0)
    cfg = arch_config("Unet", "binary")
    export(build_model(cfg), tmp_path / "v1", cfg, {"threshold": 0.5}, {}, name="footprint_a")
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 10:40] = 1
    return mask


def test_evaluate_scores_members_and_their_ensemble(tmp_path, monkeypatch):
    from models.footprint_eval.__main__ import ENSEMBLE, evaluate

    mask = _tiny_model_and_mask(tmp_path)
    scene = D.Scene("fake", "s0", "s0", np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8), mask)
    monkeypatch.setattr(D, "load", lambda ds, split, root: [scene])
    report = evaluate([tmp_path / "v1", tmp_path / "v1"], ["fake"], ["test"], tmp_path, min_votes=2,
                      cache_dir=tmp_path / "cache")
    models = report["results"]["fake"]["test"]["models"]
    assert set(models) == {"footprint_a/v1", "footprint_a/v1#1", ENSEMBLE}
    # Two identical members agreeing 2 of 2 is the member itself.
    assert models[ENSEMBLE]["pixel"] == models["footprint_a/v1"]["pixel"]
    assert report["results"]["fake"]["test"]["pixels"] == 64 * 64
    assert any((tmp_path / "cache").rglob("*.npy"))


def _val_and_test_scenes(tmp_path, monkeypatch, seed: int) -> None:
    """The tiny model in ``tmp_path/v1`` and one random 64 px scene per split (val, test)."""
    mask = _tiny_model_and_mask(tmp_path)
    rng = np.random.default_rng(seed)
    scenes = {split: D.Scene("fake", split, split, rng.integers(0, 255, (3, 64, 64), dtype=np.uint8), mask)
              for split in ("val", "test")}
    monkeypatch.setattr(D, "load", lambda ds, split, root: [scenes[split]] if split in scenes else [])


def test_evaluate_with_tta_repicks_the_threshold_on_val(tmp_path, monkeypatch):
    from models.footprint_eval.__main__ import evaluate
    from models.footprint_unet.train import THRESHOLDS

    _val_and_test_scenes(tmp_path, monkeypatch, seed=0)
    report = evaluate([tmp_path / "v1"], ["fake"], ["test"], tmp_path, cache_dir=tmp_path / "cache",
                      tta="flips", threshold_from="val")
    member = report["members"][0]
    assert report["tta"] == "flips" and member["threshold_from"] == "val"
    assert member["threshold"] in THRESHOLDS and "fake" in member["val_iou"]
    cached = {p.parent.name for p in (tmp_path / "cache").rglob("*.npy")}
    assert cached == {"val", "test"}
    assert all("-tta-flips" in p.parts[-4] for p in (tmp_path / "cache").rglob("*.npy"))


def test_evaluate_mean_ensemble_picks_its_own_threshold_on_val(tmp_path, monkeypatch):
    from models.footprint_eval.__main__ import ENSEMBLE, evaluate
    from models.footprint_unet.train import THRESHOLDS

    _val_and_test_scenes(tmp_path, monkeypatch, seed=1)
    report = evaluate([tmp_path / "v1", tmp_path / "v1"], ["fake"], ["test"], tmp_path,
                      cache_dir=tmp_path / "cache", threshold_from="val", how="mean", ensemble_threshold="val")
    assert report["min_votes"] is None
    ens = report["ensemble"]
    assert ens["combine"] == "mean" and ens["threshold_from"] == "val" and ens["threshold"] in THRESHOLDS
    # The mean of two identical members is the member: same map, same val-picked threshold.
    assert ens["threshold"] == report["members"][0]["threshold"]
    models = report["results"]["fake"]["test"]["models"]
    assert models[ENSEMBLE]["pixel"] == models["footprint_a/v1"]["pixel"]
    # By default the cut is the members' mean threshold, as in the segmentation service.
    report = evaluate([tmp_path / "v1", tmp_path / "v1"], ["fake"], ["test"], tmp_path,
                      cache_dir=tmp_path / "cache", threshold_from="val", how="mean")
    assert report["ensemble"]["threshold"] is None
    assert report["ensemble"]["threshold_from"] == "mean of the members' thresholds"


def test_record_threshold_writes_the_val_pick_for_that_tta(tmp_path, monkeypatch):
    from models.footprint_eval.__main__ import evaluate, record_thresholds

    _val_and_test_scenes(tmp_path, monkeypatch, seed=2)
    report = evaluate([tmp_path / "v1"], ["fake"], ["test"], tmp_path, tta="flips", threshold_from="val")
    report.update(command="footprint_eval …", evaluated_at="2026-11-23T00:00:00+00:00")
    before = json.loads((tmp_path / "v1" / "config.json").read_text())
    (path,) = record_thresholds(report)
    cfg = json.loads(path.read_text())
    assert cfg["output"]["threshold_by_tta"] == {"flips": report["members"][0]["threshold"]}
    assert cfg["output"]["threshold_by_tta_chosen_on"]["flips"]["command"] == "footprint_eval …"
    assert cfg["output"]["threshold"] == before["output"]["threshold"]  # the plain cut stays
    with pytest.raises(SystemExit):
        record_thresholds(evaluate([tmp_path / "v1"], ["fake"], ["test"], tmp_path, tta="flips"))
