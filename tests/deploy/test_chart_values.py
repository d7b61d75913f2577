"""Wrong values fail at install (values.schema.json, templates/validate.yaml), naming the value."""

from __future__ import annotations

from typing import Any

import deploy_support as ds
import pytest
import yaml


def render_error(helm: Any, values: dict[str, Any], profile: str | None = "dev") -> str:
    """Render with ``values``; return the error message (the test fails if it renders)."""
    with pytest.raises((helm.HelmValuesError, helm.HelmRenderError)) as info:
        ds.render(values, profile=profile)
    return str(info.value)


def test_unknown_profile_is_rejected(helm: Any) -> None:
    message = render_error(helm, {"profile": "staging"}, profile=None)
    assert "/profile" in message and "dev" in message and "gpu" in message


def test_missing_credentials_secret_name_is_rejected(helm: Any) -> None:
    message = render_error(helm, {"objectStore": {"credentialsSecret": {"name": ""}}})
    assert "objectStore/credentialsSecret/name" in message


def test_credentials_secret_removed_in_a_values_file_is_rejected(helm: Any) -> None:
    # `name: null` in a values file deletes the chart default, as when it was never given.
    values = yaml.safe_load("objectStore:\n  credentialsSecret:\n    name: null\n")
    message = render_error(helm, values)
    assert "objectStore/credentialsSecret" in message and "name" in message


def test_plain_text_credentials_are_rejected(helm: Any) -> None:
    message = render_error(helm, {"objectStore": {"accessKey": "AKIA...", "secretKey": "hunter2"}})
    assert "/objectStore" in message and "accessKey" in message


def test_zero_gpus_for_a_gpu_model_fails_naming_the_value(helm: Any) -> None:
    message = render_error(helm, {"inferenceServices": {"footprint-unet": {"gpus": 0}}}, profile="gpu")
    assert "inferenceServices.footprint-unet.gpus must be at least 1" in message
    assert '"cuda"' in message


def test_zero_gpus_by_profile_default_fails_too(helm: Any) -> None:
    # No device/gpus in the entry: the gpu profile says cuda; a profile default of 0 GPUs fails.
    values = {"profiles": {"gpu": {"device": "cuda", "gpus": 0}},
              "inferenceServices": {"roof-material": {"device": None, "gpus": None}}}
    message = render_error(helm, values, profile="gpu")
    assert "inferenceServices.roof-material.gpus must be at least 1" in message


def test_scale_to_zero_needs_serverless(helm: Any) -> None:
    message = render_error(helm, {"inferenceServices": {"footprint-unet": {"minReplicas": 0}}})
    assert "inferenceServices.footprint-unet.minReplicas" in message and "Serverless" in message
    docs = ds.documents(ds.render({"modelServing": {"deploymentMode": "Serverless"},
                                   "inferenceServices": {"footprint-unet": {
                                       "minReplicas": 0, "scaleMetric": "concurrency", "scaleTarget": 4}}}))
    (isvc,) = [d for d in ds.of_kind(docs, "InferenceService") if d["metadata"]["name"].endswith("footprint-unet")]
    assert isvc["spec"]["predictor"]["minReplicas"] == 0
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"


def test_malformed_values_file_is_rejected_with_a_clear_message(helm: Any) -> None:
    values = yaml.safe_load("""
services:
  segmentation:
    replicas: two
kafka:
  bootstrapServers: "kafka:nine"
""")
    message = render_error(helm, values)
    assert "/services/segmentation/replicas" in message
    assert "/kafka/bootstrapServers" in message


def test_unknown_keys_are_rejected(helm: Any) -> None:
    message = render_error(helm, {"inferenceServices": {"footprint-unet": {"gpu": 1}}})
    assert "/inferenceServices/footprint-unet" in message and "'gpu'" in message


def test_chart_defaults_render_without_profile_file(helm: Any) -> None:
    docs = ds.documents(ds.render())
    names = {d["metadata"]["name"].removeprefix(f"{ds.RELEASE}-") for d in ds.of_kind(docs, "InferenceService")}
    assert names == {"footprint-unet", "roof-material", "roof-shape", "facade-material"}


def test_footprint_ensemble_members_can_be_enabled(helm: Any) -> None:
    # The v5 + v6 + v7 mean ensemble (docs/footprints.md) needs all three served beside v1.
    on = {"enabled": True}
    members = {"footprint-unet-v5": on, "footprint-unet-v6": on, "footprint-unet-v7": on}
    docs = ds.documents(ds.render({"inferenceServices": members}))
    isvcs = {d["metadata"]["name"].removeprefix(f"{ds.RELEASE}-"): d for d in ds.of_kind(docs, "InferenceService")}
    assert {"footprint-unet", "footprint-unet-v5", "footprint-unet-v6", "footprint-unet-v7"} <= set(isvcs)
    versions = {isvcs[k]["metadata"]["labels"]["urbanfabric.io/model-version"] for k in isvcs if k.startswith("footprint")}
    assert versions == {"v1", "v5", "v6", "v7"}


def test_torchserve_runtime_option(helm: Any) -> None:
    docs = ds.documents(ds.render({"modelServing": {"runtime": "torchserve"}}, profile="gpu"))
    assert not ds.of_kind(docs, "ServingRuntime")
    for isvc in ds.of_kind(docs, "InferenceService"):
        model = isvc["spec"]["predictor"]["model"]
        version = isvc["metadata"]["labels"]["urbanfabric.io/model-version"]
        assert model["modelFormat"] == {"name": "pytorch"}
        assert model["runtime"] == "kserve-torchserve"
        assert model["storageUri"].endswith(f"/{version}/torchserve")
        on_cpu = isvc["metadata"]["labels"]["urbanfabric.io/model"] in ("roof-shape", "facade-material")
        assert ("nvidia.com/gpu" in model["resources"].get("limits", {})) is not on_cpu


def test_a_learned_version_rolls_out_as_a_canary_then_is_promoted(helm: Any) -> None:
    """Issue 21, item 4: a canary revision serves the new version with a traffic share, under the
    served version's name; promotion is the version itself; RawDeployment cannot split traffic."""
    serverless = {"modelServing": {"deploymentMode": "Serverless"}}
    canary = {**serverless, "inferenceServices": {"roof-material": {
        "canary": {"version": "v4-ft1", "trafficPercent": 20}}}}
    (isvc,) = [d for d in ds.of_kind(ds.documents(ds.render(canary, profile="dev")), "InferenceService")
               if d["metadata"]["labels"]["urbanfabric.io/model"] == "roof-material"]
    predictor, model = isvc["spec"]["predictor"], isvc["spec"]["predictor"]["model"]
    env = {e["name"]: e["value"] for e in model["env"]}
    assert predictor["canaryTrafficPercent"] == 20
    assert model["storageUri"] == "s3://urbanfabric/models/roof_material/v4-ft1"
    assert env["UF_ISVC_VERSION"] == "v4-ft1" and env["UF_ISVC_SERVE_AS"] == "roof-material-v4"
    assert isvc["metadata"]["labels"]["urbanfabric.io/canary-version"] == "v4-ft1"
    promoted = {**serverless, "inferenceServices": {"roof-material": {"version": "v4-ft1", "canary": {"version": ""}}}}
    (isvc,) = [d for d in ds.of_kind(ds.documents(ds.render(promoted, profile="dev")), "InferenceService")
               if d["metadata"]["labels"]["urbanfabric.io/model"] == "roof-material"]
    env = {e["name"]: e["value"] for e in isvc["spec"]["predictor"]["model"]["env"]}
    assert "canaryTrafficPercent" not in isvc["spec"]["predictor"] and "UF_ISVC_SERVE_AS" not in env
    assert env["UF_ISVC_VERSION"] == "v4-ft1"
    message = render_error(helm, {"inferenceServices": {"roof-material": {"canary": {"version": "v4-ft1"}}}})
    assert "inferenceServices.roof-material.canary.version" in message and "Serverless" in message
    message = render_error(helm, {**serverless, "inferenceServices": {"roof-material": {
        "canary": {"version": "v4-ft1", "trafficPercent": 150}}}})
    assert "trafficPercent" in message
