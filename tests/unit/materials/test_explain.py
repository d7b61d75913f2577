"""Unit tests of urbanfabric.materials.explain: the heatmaps must point at the evidence.

A tiny CNN is trained for a few seconds to tell chips with a bright textured square (class 1)
from plain noise (class 0). For each method, occluding the window the heatmap scores highest
must lower the class-1 score far more than occluding the window it scores lowest, and the top
window must sit on the square. The same check run on an inverted map fails (shown below), so
the criterion can fail.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from urbanfabric.materials import explain as E
from urbanfabric.errors import InvalidInput

torch.set_num_threads(1)

SIZE, PATCH = 32, 8
REPO = Path(__file__).resolve().parents[3]
ROOF_DATA = REPO.parent / "shared/data/roofs/caribbean-material"


def _chips(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise chips; odd ones carry a checkerboard square. Returns chips, labels, corners."""
    x = rng.uniform(0.3, 0.5, size=(n, 3, SIZE, SIZE)).astype(np.float32)
    y = np.arange(n) % 2
    corners = rng.integers(0, SIZE - PATCH + 1, size=(n, 2))
    check = (np.indices((PATCH, PATCH)).sum(0) % 2).astype(np.float32)
    for i in np.flatnonzero(y):
        r, c = corners[i]
        x[i, :, r : r + PATCH, c : c + PATCH] = 0.2 + 0.75 * check
    return x, y, corners


class TinyNet(nn.Module):
    """conv-ReLU-pool-conv-ReLU6-conv-ReLU-GAP-linear: ReLU6 exercises the guided copy."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU6(inplace=True),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def trained() -> TinyNet:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = TinyNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(120):
        x, y, _ = _chips(32, rng)
        loss = F.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    x, y, _ = _chips(64, np.random.default_rng(1))
    with torch.no_grad():
        acc = (net(torch.from_numpy(x)).argmax(1).numpy() == y).mean()
    assert acc > 0.95, f"the tiny model did not learn the pattern (acc {acc:.2f})"
    return net


def _window(heat: np.ndarray, best: bool) -> tuple[int, int]:
    """Upper-left corner of the PATCH×PATCH window with the highest (or lowest) total heat."""
    pooled = F.avg_pool2d(torch.from_numpy(heat)[None, None], PATCH, stride=1)[0, 0].numpy()
    flat = pooled.argmax() if best else pooled.argmin()
    return tuple(int(v) for v in np.unravel_index(flat, pooled.shape))  # type: ignore[return-value]


def _score(net: nn.Module, chip: np.ndarray) -> float:
    with torch.no_grad():
        return float(torch.softmax(net(torch.from_numpy(chip)[None]), 1)[0, 1])


def _occluded(chip: np.ndarray, corner: tuple[int, int]) -> np.ndarray:
    out = chip.copy()
    r, c = corner
    out[:, r : r + PATCH, c : c + PATCH] = 0.4  # the background's mean
    return out


def _deletion(net: nn.Module, method: E.Method, invert: bool = False) -> tuple[float, float, float]:
    """Mean score drop (top window, low window) and top-window hit rate over 12 class-1 chips."""
    x, y, corners = _chips(24, np.random.default_rng(2))
    top_drops, low_drops, hits = [], [], []
    for chip, corner in zip(x[y == 1], corners[y == 1]):
        exp = E.explain(net, chip, method, target=1)
        heat = -exp.heatmap if invert else exp.heatmap
        base = _score(net, chip)
        top, low = _window(heat, True), _window(heat, False)
        top_drops.append(base - _score(net, _occluded(chip, top)))
        low_drops.append(base - _score(net, _occluded(chip, low)))
        hits.append(max(abs(top[0] - corner[0]), abs(top[1] - corner[1])) < PATCH // 2)
    return float(np.mean(top_drops)), float(np.mean(low_drops)), float(np.mean(hits))


@pytest.mark.parametrize("method", list(E.Method))
def test_heatmap_moves_with_the_evidence(trained: TinyNet, method: E.Method) -> None:
    top, low, hit = _deletion(trained, method)
    assert top > 0.5 and top > low + 0.4, (top, low)
    assert hit >= 0.9, hit


def test_an_inverted_map_fails_the_same_check(trained: TinyNet) -> None:
    top, low, hit = _deletion(trained, E.Method.GRAD_CAM, invert=True)
    assert not (top > 0.5 and top > low + 0.4) and hit < 0.5, (top, low, hit)


def test_shapes_scores_default_target_and_model_untouched(trained: TinyNet) -> None:
    x, _, _ = _chips(2, np.random.default_rng(3))
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    relus = [m for m in trained.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    for method in E.Method:
        exp = E.explain(trained, x[1], method, classes=["plain", "square"], temperature=2.0)
        assert exp.heatmap.shape == (SIZE, SIZE) and exp.heatmap.dtype == np.float32
        assert np.isfinite(exp.heatmap).all() and exp.heatmap.max() > 0
        assert exp.target == 1 and exp.target_name == "square"
        np.testing.assert_allclose(exp.scores.sum(), 1.0, rtol=1e-5)
        np.testing.assert_allclose(exp.scores, E.probabilities(exp.logits, temperature=2.0), rtol=1e-5)
    # Grad-CAM lands on the last feature map (the final ReLU), found automatically.
    assert E.explain(trained, x[1]).layer == "features.6"
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in before.items())
    assert [type(m) for m in trained.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))] == [type(m) for m in relus]
    assert relus[0].inplace is True  # the copy, not the model, was made non-inplace


def test_guided_copy_guides_relu6() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU6(inplace=True), nn.SiLU())
    twin, unguided = E.guidable(net)
    assert isinstance(twin[1], nn.ReLU) and unguided == 1
    x = torch.linspace(-2, 8, 5)
    np.testing.assert_allclose(twin[1](x).numpy(), F.relu6(x).numpy())


def test_multi_label_scores_are_sigmoids() -> None:
    p = E.probabilities(np.array([[0.0, 2.0, -2.0]]), multi_label=True, temperature=2.0)
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-np.array([[0.0, 1.0, -1.0]]))), rtol=1e-6)
    with pytest.raises(InvalidInput, match="temperature"):
        E.probabilities(np.zeros((1, 2)), temperature=0.0)


def test_bad_input_is_named(trained: TinyNet) -> None:
    chip = np.zeros((3, SIZE, SIZE), np.float32)
    with pytest.raises(InvalidInput, match="target"):
        E.explain(trained, chip, target=5)
    with pytest.raises(InvalidInput, match="method"):
        E.explain(trained, chip, method="occlusion")
    with pytest.raises(InvalidInput, match="chip"):
        E.explain(trained, np.zeros((SIZE, SIZE), np.float32))
    bad = chip.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InvalidInput, match="chip"):
        E.explain(trained, bad)


def test_overlay_png_is_a_png_of_the_chip_size() -> None:
    chip = np.random.default_rng(0).uniform(size=(3, 16, 16)).astype(np.float32)
    heat = np.zeros((16, 16), np.float32)
    heat[4:8, 4:8] = 1.0
    img = Image.open(io.BytesIO(E.overlay_png(chip, heat, scale=2)))
    assert img.format == "PNG" and img.size == (32, 32)
    rgb = np.asarray(img)[::2, ::2]
    np.testing.assert_array_equal(rgb[0, 0], E.chip_rgb(chip)[0, 0])  # no heat: the chip itself
    assert not np.array_equal(rgb[5, 5], E.chip_rgb(chip)[5, 5])


def test_shipped_roof_model_grad_cam_deletion() -> None:
    """On the shipped roof model and real val chips: hiding the hottest quarter hurts more."""
    if not (ROOF_DATA / "val").is_dir():
        pytest.skip(f"sample data absent: {ROOF_DATA}")
    from models.roof_material.data import eval_chip, list_samples, load_scaled

    ex = E.load_explainable(REPO / "models/roof_material/v1")
    samples = list_samples(ROOF_DATA, "val", ex.classes)[::12][:8]
    drops_top, drops_low = [], []
    for s in samples:
        chip = eval_chip(load_scaled(s.path), ex.chip_size)
        exp = E.explain(ex.model, chip, E.Method.GRAD_CAM)
        order = np.argsort(exp.heatmap.ravel())
        quarter = order.size // 4
        for idx, drops in ((order[-quarter:], drops_top), (order[:quarter], drops_low)):
            hidden = chip.reshape(3, -1).copy()
            hidden[:, idx] = chip.reshape(3, -1).mean(axis=1, keepdims=True)
            p = E.probabilities(ex.model(torch.from_numpy(hidden.reshape(chip.shape))[None]).detach().numpy())
            drops.append(exp.scores[exp.target] - p[0, exp.target])
    assert np.mean(drops_top) > np.mean(drops_low), (np.mean(drops_top), np.mean(drops_low))


def test_cli_explains_an_image_file(tmp_path) -> None:
    from urbanfabric.cli.main import main

    img = tmp_path / "roof.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 60, 3), dtype=np.uint8)).save(img)
    assert main(["explain", "--image", str(img), "--method", "all", "--target", "other",
                 "--out", str(tmp_path / "out")]) == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["roof.json", "roof_chip.png", "roof_gradcam.png", "roof_guided-backprop.png",
                     "roof_guided-gradcam.png"]
    import json

    summary = json.loads((tmp_path / "out/roof.json").read_text())
    assert summary["target_class"] == "other" and abs(sum(summary["scores"].values()) - 1) < 1e-3
    with pytest.raises(InvalidInput, match="target"):
        main(["explain", "--image", str(img), "--target", "slate", "--out", str(tmp_path / "o2")])


def test_cli_folder_with_a_labels_file_and_a_split(tmp_path) -> None:
    import json

    from urbanfabric.cli.main import main

    rng = np.random.default_rng(1)
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "labels.csv").write_text("filename, other, healthy_metal\na.png, 1, 0\nb.png, 1, 1\nc.png, 0, 1\n")
    (tmp_path / "test.txt").write_text("b.png\nc.png\n")
    assert main(["explain", "--folder", str(tmp_path), "--labels", str(tmp_path / "labels.csv"),
                 "--only", str(tmp_path / "test.txt"), "--per-class", "1", "--out", str(tmp_path / "g")]) == 0
    panels = json.loads((tmp_path / "g/gallery.json").read_text())["panels"]
    assert [(p["true"], p["source"]) for p in panels] == [("healthy_metal", "b.png"), ("other", "b.png")]
    assert Image.open(tmp_path / "g" / panels[0]["file"]).size == (4 * 128 + 3 * 2, 128)
