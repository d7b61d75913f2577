"""KServe resources against the CRD schemas, skaffold.yaml against skaffold's schema.

Both run the real ``check-jsonschema`` CLI over files written to a temporary directory. The
KServe CRDs get ``additionalProperties: false`` on every object (a misspelt field must fail,
and one deliberately misspelt resource proves it in the same run).
"""

from __future__ import annotations

import copy
import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import deploy_support as ds
import pytest
import yaml

CRDS = {
    "InferenceService": "kserve/serving.kserve.io_inferenceservices.yaml",
    "ServingRuntime": "kserve/serving.kserve.io_servingruntimes.yaml",
}


def check_jsonschema() -> str:
    exe = Path(sys.executable).with_name("check-jsonschema")
    found = str(exe) if exe.is_file() else shutil.which("check-jsonschema")
    if not found:
        pytest.skip("check-jsonschema is not installed (pip install -r requirements-deploy.txt)")
    return found


def run_check(schema: Path, files: list[Path]) -> dict[str, Any]:
    proc = subprocess.run([check_jsonschema(), "-o", "json", "--schemafile", str(schema), *map(str, files)],
                          check=False, capture_output=True, text=True, timeout=120)
    return json.loads(proc.stdout)


@functools.lru_cache(maxsize=1)
def _variants() -> dict[str, list[dict[str, Any]]]:
    """Every way the chart renders KServe resources: both profiles, Serverless, TorchServe."""
    return {
        "dev": ds.documents(ds.render(profile="dev")),
        "gpu": ds.documents(ds.render(profile="gpu")),
        "serverless": ds.documents(ds.render({"modelServing": {"deploymentMode": "Serverless"},
                                              "inferenceServices": {"footprint-unet": {
                                                  "minReplicas": 0, "scaleMetric": "concurrency"}}},
                                             profile="gpu")),
        "torchserve": ds.documents(ds.render({"modelServing": {"runtime": "torchserve"}}, profile="gpu")),
    }


def variants(helm: Any) -> dict[str, list[dict[str, Any]]]:
    del helm  # the fixture only makes the test skip without helm-python-sdk
    return _variants()


def misspell(kind: str, doc: dict[str, Any]) -> dict[str, Any]:
    bad = copy.deepcopy(doc)
    if kind == "InferenceService":
        model = bad["spec"]["predictor"]["model"]
        model["storageURI"] = model.pop("storageUri")
    else:
        bad["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    return bad


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_kserve_resources_match_crd_schemas(helm: Any, schemas_dir: Path, tmp_path: Path, kind: str) -> None:
    schema = tmp_path / f"{kind}.schema.json"
    schema.write_text(json.dumps(ds.strict_crd_schema(schemas_dir / CRDS[kind])))
    files: list[Path] = []
    for variant, docs in variants(helm).items():
        for n, doc in enumerate(ds.of_kind(docs, kind)):
            path = tmp_path / f"{variant}-{n}.json"
            path.write_text(json.dumps(doc))
            files.append(path)
    assert len(files) >= 4 if kind == "InferenceService" else len(files) >= 3
    bad = tmp_path / "misspelt.json"
    bad.write_text(json.dumps(misspell(kind, json.loads(files[0].read_text()))))
    report = run_check(schema, [*files, bad])
    failing = {Path(e["filename"]).name for e in report["errors"]}
    assert not report["parse_errors"]
    assert failing == {"misspelt.json"}, report["errors"]
    assert any("was unexpected" in e["message"] for e in report["errors"])


def test_skaffold_config_matches_schema(schemas_dir: Path) -> None:
    report = run_check(schemas_dir / "skaffold" / "v4beta14.json", [ds.ROOT / "skaffold.yaml"])
    assert report["status"] == "ok" and not report["errors"], report


def test_skaffold_builds_every_image_and_deploys_the_chart() -> None:
    config = yaml.safe_load((ds.ROOT / "skaffold.yaml").read_text())
    values = yaml.safe_load((ds.CHART / "values.yaml").read_text())
    artifacts = {a["image"]: a for a in config["build"]["artifacts"]}
    # One artifact per image the chart runs, each built by the one recipe with SERVICE naming it.
    assert set(artifacts) == set(values["images"].values())
    for key, image in values["images"].items():
        artifact = artifacts[image]
        assert artifact["context"] == "." and artifact["docker"]["dockerfile"] == "Dockerfile", image
        assert (ds.ROOT / artifact["context"] / artifact["docker"]["dockerfile"]).resolve() == ds.DOCKERFILE
        assert artifact["docker"]["buildArgs"]["SERVICE"] == key, image
    assert sorted(values["images"]) == ds.images()
    recipe_args = {i.args.partition("=")[0] for i in ds.parse_dockerfile().all("ARG")}
    (release,) = config["deploy"]["helm"]["releases"]
    assert (ds.ROOT / release["chartPath"] / "Chart.yaml").is_file()
    templates = release["setValueTemplates"]
    for key, image in values["images"].items():
        var = image.replace("-", "_")
        assert templates[f"images.{key}"] == f"{{{{.IMAGE_FULLY_QUALIFIED_{var}}}}}"
    profiles = {p["name"]: p for p in config["profiles"]}
    assert set(profiles) == set(ds.PROFILES)
    for name, profile in profiles.items():
        for patch in profile.get("patches", []):
            if patch["path"].endswith("/valuesFiles"):
                assert patch["value"] == [f"charts/urbanfabric/values-{name}.yaml"]
            if patch["path"].startswith("/build/artifacts/"):
                index = int(patch["path"].split("/")[3])
                assert config["build"]["artifacts"][index]["image"] == "urbanfabric-modelserver"
                assert patch["value"]["SERVICE"] == "modelserver"  # the patch replaces all build args
    for artifact in config["build"]["artifacts"]:
        assert set(artifact["docker"]["buildArgs"]) <= recipe_args, artifact["image"]
    dev_args = next(p["value"] for p in profiles["dev"]["patches"] if p["path"].endswith("buildArgs"))
    assert "cpu" in dev_args["TORCH_INDEX_URL"] and "cuda" not in dev_args["BASE_IMAGE"]
    assert "cuda" in artifacts["urbanfabric-modelserver"]["docker"]["buildArgs"]["BASE_IMAGE"]
