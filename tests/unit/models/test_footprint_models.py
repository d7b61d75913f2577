"""Second architecture family, signed-distance head, export/load contract, multi-set batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(1)
pytest.importorskip("segmentation_models_pytorch")

from models.footprint_unet import datasets as D  # noqa: E402
from models.footprint_unet.net import build_model, load_model, logits_to_proba, predict_proba  # noqa: E402
from models.footprint_unet.targets import SDT_CLASSES  # noqa: E402
from models.footprint_unet.train import export  # noqa: E402
from models.footprint_unet.train_multi import arch_config, init_from, loss_fn, make_batch  # noqa: E402


def _scenes(n: int = 3, size: int = 300) -> list[D.Scene]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        mask = np.zeros((size, size), np.uint8)
        mask[50:120, 60:200] = 1
        out.append(D.Scene("fake", f"s{i}", f"s{i}", rng.integers(0, 255, (3, size, size), dtype=np.uint8), mask))
    return out


@pytest.mark.parametrize(("arch", "target"), [("DeepLabV3Plus", "binary"), ("Unet", "sdt"), ("FPN", "sdt")])
def test_export_load_roundtrip_any_family_and_head(tmp_path, arch, target):
    torch.manual_seed(0)
    cfg = arch_config(arch, target)
    model = build_model(cfg).eval()
    val = {"threshold": 0.4, "iou": 0.1}
    export(model, tmp_path / "v9", cfg, val, {"step": 0}, name="footprint_test")
    loaded = load_model(tmp_path / "v9")  # what net.load_model / the model server call
    x = np.random.default_rng(1).random((2, 3, 64, 64), dtype=np.float32)
    a, b = predict_proba(model, x), predict_proba(loaded, x)
    assert a.shape == (2, 64, 64) and np.all((b >= 0) & (b <= 1))
    np.testing.assert_allclose(a, b, atol=5e-3)  # fp16 weights on disk
    import json

    saved = json.loads((tmp_path / "v9" / "config.json").read_text())
    assert saved["architecture"] == arch and saved["output"]["threshold"] == 0.4
    assert saved["output"]["channels"] == (1 if target == "binary" else SDT_CLASSES)


def test_sdt_probability_is_mass_of_building_classes():
    logits = torch.full((1, SDT_CLASSES, 1, 1), -20.0)
    logits[0, 7] = 20.0  # an interior class
    assert logits_to_proba(logits).item() == pytest.approx(1.0)
    logits[0, 7], logits[0, 5] = -20.0, 20.0  # the middle class is background
    assert logits_to_proba(logits).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("target", ["binary", "sdt"])
def test_batches_and_loss(target):
    rng = np.random.default_rng(0)
    x, m, y = make_batch({"fake": _scenes()}, {"fake": 1.0}, 2, target, rng)
    assert x.shape == (2, 3, 256, 256) and m.shape == (2, 1, 256, 256)
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    if target == "sdt":
        assert y.dtype == torch.int64 and ((y > 5).float() == m[:, 0]).all()
    torch.manual_seed(0)
    model = build_model(arch_config("Unet", target))
    loss = loss_fn(model(x[:, :, :64, :64]), m[:, :, :64, :64], y[..., :64, :64])
    assert torch.isfinite(loss) and loss.item() > 0


@pytest.mark.parametrize("loss", ["bce_dice", "bce_lovasz"])
def test_binary_losses_reward_the_right_mask(loss):
    target = torch.zeros(2, 1, 32, 32)
    target[:, :, 8:20, 4:28] = 1
    right = (target * 2 - 1) * 6  # confident logits with the right sign everywhere
    wrong = right.clone()
    wrong[:, :, 8:20, 4:16] *= -1  # half of each building missed
    assert loss_fn(right, target, target, loss) < loss_fn(wrong, target, target, loss)
    assert torch.isfinite(loss_fn(wrong, target, target, loss))


def test_init_from_copies_matching_tensors_only(tmp_path):
    torch.manual_seed(0)
    src = build_model(arch_config("Unet", "binary"))
    export(src, tmp_path / "v1", arch_config("Unet", "binary"), {"threshold": 0.5}, {})
    dst = build_model(arch_config("Unet", "sdt"))  # same body, 11-class head
    n = init_from(dst, tmp_path / "v1")
    own = dst.state_dict()
    assert 0 < n < len(own)  # the head differs in shape and is left alone
    key = "net.encoder.model.conv_stem.weight"
    torch.testing.assert_close(own[key], src.state_dict()[key].half().float())


def test_random_crop_pads_small_scenes():
    scene = _scenes(1, size=100)[0]
    img, mask = D.random_crop(scene, 128, np.random.default_rng(0))
    assert img.shape == (3, 128, 128) and mask.shape == (128, 128)


def test_random_crop_zoom_scales_buildings():
    # Under zoom z a 128 px crop is cut from a 128/z px square: a scene of exactly that size
    # (so the crop is the whole scene) with a square building of side a in the middle must
    # come back with a building of side a·z.
    for zoom, side in ((0.5, 40), (2.0, 20)):
        n = int(128 / zoom)
        mask = np.zeros((n, n), np.uint8)
        lo = (n - side) // 2
        mask[lo : lo + side, lo : lo + side] = 1
        image = np.repeat(mask[None] * 200, 3, axis=0).astype(np.uint8)
        img, m = D.random_crop(D.Scene("fake", "sq", "sq", image, mask), 128, np.random.default_rng(0),
                               scale=(zoom, zoom))
        assert img.shape == (3, 128, 128) and m.shape == (128, 128) and m.dtype == np.uint8
        assert img.dtype == np.float32 and set(np.unique(m)) <= {0, 1}
        assert int(m.sum()) == pytest.approx((side * zoom) ** 2, rel=0.15)
        # The image is resized with the mask: building pixels stay bright where the mask says so.
        assert img[0][m == 1].mean() > 150 and img[0][m == 0].mean() < 50


def test_random_crop_zoom_range_is_validated_and_native_by_default():
    scene = _scenes(1)[0]
    img, _ = D.random_crop(scene, 128, np.random.default_rng(0))
    assert img.dtype == np.uint8  # no resampling without a zoom range
    with pytest.raises(ValueError, match="scale"):
        D.random_crop(scene, 128, np.random.default_rng(0), scale=(1.5, 0.7))


def test_scale_aug_flag_parses_and_rejects_bad_ranges():
    from models.footprint_unet.train_multi import parse_args

    base = ["--out", "o", "--ckpt-dir", "c", "--minutes", "1"]
    assert parse_args(base).scale_aug is None
    assert parse_args(base + ["--scale-aug", "0.67,1.5"]).scale_aug == (0.67, 1.5)
    for bad in ("1.5,0.67", "0,1", "big"):
        with pytest.raises(SystemExit):
            parse_args(base + ["--scale-aug", bad])


def test_every_shipped_footprint_version_loads_and_predicts():
    from pathlib import Path

    repo = Path(__file__).resolve().parents[3]
    versions = sorted(p.parent for p in repo.glob("models/footprint_*/v*/config.json"))
    assert any(v.parent.name == "footprint_unet" and v.name == "v1" for v in versions)
    x = np.random.default_rng(0).random((1, 3, 40, 40), dtype=np.float32)
    for v in versions:
        prob = predict_proba(load_model(v), x)
        assert prob.shape == (1, 40, 40) and np.all((prob >= 0) & (prob <= 1)), v
