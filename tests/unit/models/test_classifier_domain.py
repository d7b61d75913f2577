"""Calibrated, out-of-domain-scored classifier versions (issue 18, item 2): the model server's
second output, its determinism, and the statistics file travelling with the version."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]
SHAPE_CROPS = REPO.parent / "shared" / "data" / "roofs" / "roof-shape" / "crops"


@pytest.fixture(scope="module")
def client():
    pytest.importorskip("kserve")
    from urbanfabric.runtime.model_client import InferenceProtocol, ModelClient

    with ModelClient(InferenceProtocol.EMBEDDED, model_dir=REPO / "models") as c:
        yield c


def _chips(n: int, size: int = 128, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, size, size)).astype(np.float32)


def test_a_version_with_statistics_answers_probabilities_and_scores_deterministically(client):
    x = _chips(3)
    out = client.infer_outputs("roof-shape", "v4", x)
    assert set(out) == {"probability", "ood_score"}
    assert out["probability"].shape == (3, 3) and out["ood_score"].shape == (3,)
    np.testing.assert_allclose(out["probability"].sum(1), 1.0, atol=1e-5)
    again = client.infer_outputs("roof-shape", "v4", x)
    np.testing.assert_array_equal(out["ood_score"], again["ood_score"])  # same input, same output
    np.testing.assert_array_equal(out["probability"], again["probability"])
    # Same weights, temperature and views as v3: the probabilities agree with v3's.
    np.testing.assert_allclose(out["probability"], client.infer("roof-shape", "v3", x), atol=1e-4)
    assert set(client.infer_outputs("roof-shape", "v3", x)) == {"probability"}  # no statistics, no score
    batched = client.infer_batched_outputs("roof-shape", "v4", _chips(5), batch_size=2)
    assert batched["ood_score"].shape == (5,) and batched["probability"].shape == (5, 3)


def test_noise_and_blank_chips_are_out_of_domain_but_training_crops_are_not(client):
    import json

    threshold = json.loads((REPO / "models/roof_shape/v4/config.json").read_text())["ood"]["threshold"]
    blank = np.full((1, 3, 128, 128), 0.5, np.float32)
    scores = client.infer_outputs("roof-shape", "v4", np.concatenate([_chips(2), blank]))["ood_score"]
    assert (scores > threshold).all()
    if not SHAPE_CROPS.is_dir():
        pytest.skip(f"no roof-shape crops at {SHAPE_CROPS}")
    from urbanfabric.materials.chips import image_chip

    crops = sorted(SHAPE_CROPS.glob("*"))[::12]  # ~100 crops of every split
    chips = np.stack([image_chip(p.read_bytes(), 128, "iqr") for p in crops])
    inside = client.infer_outputs("roof-shape", "v4", chips)["ood_score"]
    assert np.mean(inside <= threshold) >= 0.8  # the data set the model learnt from: mostly kept


def test_the_statistics_file_travels_with_the_version(tmp_path):
    from urbanfabric.io.model_registry import publish_served
    from urbanfabric.runtime.model_runner import config_files

    assert config_files(REPO / "models/roof_material/v4/config.json") == ["domain.npz"]
    assert config_files(REPO / "models/roof_material/v3/config.json") == []
    bad = tmp_path / "config.json"
    bad.write_text('{"ood": {"file": "../../etc/passwd"}}')
    assert config_files(bad) == []
    from tests.fakes import MemoryStore

    store = MemoryStore()
    publish_served(store)
    for folder in ("roof_material/v4", "roof_shape/v4", "facade_material/v2"):
        assert store.exists(f"models/{folder}/domain.npz") and store.exists(f"models/{folder}/model.pt")


def test_a_rest_response_with_two_binary_outputs_decodes_both():
    import json

    from urbanfabric.runtime.model_client import _decode_rest

    prob = np.array([[0.2, 0.8], [0.6, 0.4]], np.float32)
    score = np.array([0.1, 0.7], np.float32)
    header = json.dumps({"outputs": [
        {"name": "probability", "datatype": "FP32", "shape": [2, 2], "parameters": {"binary_data_size": prob.nbytes}},
        {"name": "ood_score", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": score.nbytes}},
    ]}).encode()
    out = _decode_rest(header + prob.tobytes() + score.tobytes(), str(len(header)))
    np.testing.assert_array_equal(out["probability"], prob)
    np.testing.assert_array_equal(out["ood_score"], score)
    plain = json.dumps({"outputs": [{"name": "ood_score", "datatype": "FP32", "shape": [2], "data": [0.1, 0.7]},
                                    {"name": "probability", "datatype": "FP32", "shape": [2, 2],
                                     "data": prob.ravel().tolist()}]}).encode()
    assert set(_decode_rest(plain, None)) == {"probability", "ood_score"}
