"""The release path, offline: the release workflow (parsed, linted, its images = the chart's =
the Dockerfile's), the digest pinning it runs on the chart (rendered and linted afterwards), the
seed hook Job, the quick-start bundle and the `helm test` Pod; docs/deploy.md's chart values
exist. Nothing here pushes or builds (test_image_build.py builds an image with buildah)."""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import deploy_support as ds
import pytest
import yaml

WORKFLOW = ds.ROOT / ".github" / "workflows" / "release.yml"
PIN = ds.ROOT / ".github" / "scripts" / "pin_images.py"
VALUES = yaml.safe_load((ds.CHART / "values.yaml").read_text())
BUNDLE_ON = {"bundle": {"kafka": {"enabled": True}, "minio": {"enabled": True}, "prefect": {"enabled": True}}}


def workflow() -> dict[str, Any]:
    # PyYAML reads the key `on` as True (YAML 1.1); GitHub reads it as "on".
    doc = yaml.safe_load(WORKFLOW.read_text())
    doc["on"] = doc.pop(True)
    return doc


def step(job: dict[str, Any], uses_or_name: str) -> dict[str, Any]:
    (found,) = [s for s in job["steps"] if s.get("uses", "").startswith(uses_or_name) or s.get("name") == uses_or_name]
    return found


# -- the workflow -----------------------------------------------------------------------------------
def test_workflow_releases_on_version_tags_with_least_privilege() -> None:
    wf = workflow()
    assert wf["on"] == {"push": {"tags": ["v*.*.*"]}}
    assert wf["permissions"] == {"contents": "read"}  # jobs ask for packages: write themselves
    assert wf["jobs"]["chart"]["needs"] == "images"


def test_workflow_builds_every_image_of_the_chart_from_the_one_dockerfile() -> None:
    job = workflow()["jobs"]["images"]
    services = job["strategy"]["matrix"]["service"]
    assert sorted(services) == ds.images() == sorted(VALUES["images"])
    build = step(job, "docker/build-push-action")["with"]
    assert build["context"] == "." and build["file"] == "Dockerfile" and build["push"] is True
    assert build["build-args"].splitlines()[0] == "SERVICE=${{ matrix.service }}"
    # The pushed repository is the chart's: <registry>/urbanfabric-<service> (images.<service>).
    name = step(job, "Image name")["run"]
    assert 'image=ghcr.io/${owner}/urbanfabric-${SERVICE}' in name
    assert all(VALUES["images"][s] == f"urbanfabric-{s}" for s in services)
    assert build["tags"] == "${{ steps.name.outputs.image }}:${{ steps.name.outputs.version }}"


def test_workflow_build_arguments_are_skaffolds() -> None:
    """The GPU model server gets the CUDA base and torch index skaffold's gpu build uses; the
    seed image gets the weights context its Dockerfile stage expects."""
    include = {i["service"]: i for i in workflow()["jobs"]["images"]["strategy"]["matrix"]["include"]}
    skaffold = yaml.safe_load((ds.ROOT / "skaffold.yaml").read_text())
    (ms,) = [a for a in skaffold["build"]["artifacts"] if a["image"] == "urbanfabric-modelserver"]
    assert include["modelserver"]["base_image"] == ms["docker"]["buildArgs"]["BASE_IMAGE"]
    assert include["modelserver"]["torch_index_url"] == ms["docker"]["buildArgs"]["TORCH_INDEX_URL"]
    assert include["seed"]["build_contexts"] == "weights=models"
    stages = ds.parse_dockerfile().stages()
    assert stages["weights"][0].args == "scratch AS weights"
    assert any(i.keyword == "COPY" and i.args.startswith("--from=weights ") for i in stages["svc-seed"])


def test_workflow_records_digests_and_publishes_the_pinned_chart_as_oci() -> None:
    jobs = workflow()["jobs"]
    record = step(jobs["images"], "Record the digest")
    assert record["env"]["DIGEST"] == "${{ steps.build.outputs.digest }}"
    assert step(jobs["images"], "actions/upload-artifact")["with"]["path"] == "digests/${{ matrix.service }}"
    chart = jobs["chart"]
    assert step(chart, "actions/download-artifact")["with"]["path"] == "digests"
    runs = [s.get("run", "") for s in chart["steps"]]
    pin_at = next(i for i, r in enumerate(runs) if ".github/scripts/pin_images.py" in r)
    package_at = next(i for i, r in enumerate(runs) if "helm package charts/urbanfabric" in r)
    push_at = next(i for i, r in enumerate(runs) if "helm push" in r)
    assert pin_at < package_at < push_at
    assert '--registry "ghcr.io/${owner}"' in runs[pin_at] and "--digests digests" in runs[pin_at]
    assert 'oci://ghcr.io/${OWNER}/charts' in runs[push_at]
    assert "helm lint --strict" in runs[package_at]


def test_workflow_passes_actionlint() -> None:
    exe = shutil.which("actionlint") or str(Path(sys.executable).parent / "actionlint")
    if not Path(exe).exists():
        pytest.skip("actionlint is not installed (pip install -r requirements-deploy.txt)")
    run = subprocess.run([exe, "-no-color", str(WORKFLOW)], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


def test_workflow_matches_githubs_workflow_schema() -> None:
    exe = Path(sys.executable).parent / "check-jsonschema"
    if not exe.exists():
        pytest.skip("check-jsonschema is not installed (pip install -r requirements-deploy.txt)")
    run = subprocess.run([str(exe), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


# -- pinning the chart to the released digests ---------------------------------------------------------
def fake_digests(folder: Path, names: list[str]) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in names:
        out[name] = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
        (folder / name).write_text(out[name] + "\n")
    return out


def pin(chart: Path, digests: Path, version: str = "0.2.0", registry: str = "ghcr.io/owner") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(PIN), "--chart", str(chart), "--version", version,
                           "--registry", registry, "--digests", str(digests)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_pinned_chart_pulls_every_image_by_digest(helm: Any, tmp_path: Path) -> None:
    chart = tmp_path / "urbanfabric"
    shutil.copytree(ds.CHART, chart)
    digests = fake_digests(tmp_path / "digests", ds.images())
    run = pin(chart, tmp_path / "digests")
    assert run.returncode == 0, run.stderr
    loaded = helm.Chart.load(str(chart))
    values = ds.deep_merge(ds.profile_values("gpu"), {"sampleData": {"existingClaim": "samples"}})
    docs = ds.documents(loaded.render(values, name=ds.RELEASE, namespace=ds.NAMESPACE))
    seen = set()
    for doc, c in ds.containers(docs):
        if doc["kind"] == "InferenceService":
            continue
        match = re.fullmatch(r"ghcr\.io/owner/urbanfabric-([a-z]+):0\.2\.0@(sha256:[0-9a-f]{64})", c["image"])
        if c["image"].startswith("nginxinc/"):
            continue  # the model gateway's upstream nginx
        assert match, (doc["metadata"]["name"], c["image"])
        assert digests[match.group(1)] == match.group(2)
        seen.add(match.group(1))
    assert seen == set(ds.images())  # every image is used by the chart, the seed's included
    assert yaml.safe_load((chart / "Chart.yaml").read_text())["appVersion"] == "0.2.0"
    report = helm.lint(str(chart), ds.profile_values("gpu"), strict=True, namespace=ds.NAMESPACE,
                       kube_version=f"v{ds.KUBE_VERSION}")
    assert not report["errors"] and not [m for m in report["messages"] if m["severity"] >= 2], report


def test_pinning_refuses_a_missing_or_malformed_digest(tmp_path: Path) -> None:
    chart = tmp_path / "urbanfabric"
    shutil.copytree(ds.CHART, chart)
    fake_digests(tmp_path / "digests", [n for n in ds.images() if n != "seed"])
    run = pin(chart, tmp_path / "digests")
    assert run.returncode == 2 and "'seed'" in run.stderr and "Traceback" not in run.stderr
    assert (chart / "values.yaml").read_text() == (ds.CHART / "values.yaml").read_text()  # nothing written
    (tmp_path / "digests" / "seed").write_text("sha256:abc\n")
    run = pin(chart, tmp_path / "digests")
    assert run.returncode == 2 and "'seed'" in run.stderr and "sha256:<64 hex>" in run.stderr
    fake_digests(tmp_path / "digests", ["seed"])
    run = pin(chart, tmp_path / "digests", version="v0.2.0")
    assert run.returncode == 2 and "--version" in run.stderr


def test_a_digest_value_must_be_a_sha256(helm: Any) -> None:
    with pytest.raises(helm.HelmValuesError) as info:
        ds.render({"image": {"digests": {"flows": "latest"}}})
    assert "/image/digests/flows" in str(info.value)


# -- the seed hook Job ----------------------------------------------------------------------------------
def hook_jobs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"].removeprefix(f"{ds.RELEASE}-"): d for d in ds.of_kind(docs, "Job")}


def test_seed_job_loads_models_and_sample_imagery_before_the_model_check(helm: Any) -> None:
    docs = ds.documents(ds.render({"sampleData": {"existingClaim": "samples"}}, profile="gpu"))
    jobs = hook_jobs(docs)
    seed, check = jobs["seed"], jobs["models-check"]
    assert seed["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    weight = lambda j: int(j["metadata"]["annotations"]["helm.sh/hook-weight"])  # noqa: E731
    assert weight(seed) < weight(check)  # Helm runs hooks of one event by weight, each to completion
    pod = seed["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "urbanfabric-seed:0.1.0"
    assert c["command"] == ["python", "-m", "urbanfabric.cli.seed"] and c["args"] == ["--samples", "xiamen-z18"]
    assert set(c["args"][::2]) <= ds.argparse_flags(ds.module_file("urbanfabric.cli.seed"))
    mount = {m["name"]: m for m in c["volumeMounts"]}["sample-data"]
    assert mount["mountPath"] == VALUES["sampleData"]["mountPath"] and mount["readOnly"] is True
    assert {v["name"]: v for v in pod["volumes"]}["sample-data"]["persistentVolumeClaim"]["claimName"] == "samples"
    (config,) = [d for d in ds.of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-config")]
    assert c["envFrom"][0]["configMapRef"]["name"] == config["metadata"]["name"]
    assert config["data"]["URBANFABRIC_SHARED_DATA"] == VALUES["sampleData"]["mountPath"]
    # Without a sample claim it registers nothing (the models still go up); off, no Job at all.
    (c,) = hook_jobs(ds.documents(ds.render({}, profile="gpu")))["seed"]["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["--samples", ""]
    assert "seed" not in hook_jobs(ds.documents(ds.render({"seed": {"enabled": False}})))


# -- helm test ------------------------------------------------------------------------------------------
def test_helm_test_pod_maps_a_tiny_area_of_the_sample(helm: Any) -> None:
    docs = ds.documents(ds.render({}, profile="gpu"))
    (pod,) = ds.of_kind(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    (c,) = pod["spec"]["containers"]
    assert c["command"] == ["python", "-m", "urbanfabric.cli.main", "run"]
    # Its flags are the job spec's: they parse into a valid JobSpec, as `urbanfabric run` parses them.
    from urbanfabric.cli.spec_flags import add_spec_arguments, spec_from_args

    parser = argparse.ArgumentParser()
    add_spec_arguments(parser)
    spec = spec_from_args(parser.parse_args(c["args"]))
    assert spec.imagery == "sample:xiamen-z18"
    assert not ds.of_kind(ds.documents(ds.render({"helmTest": {"enabled": False}})), "Pod")


def test_helm_test_area_is_inside_the_sample_imagery() -> None:
    import morecantile

    from urbanfabric.imagery.samples import SAMPLE_SOURCES

    folder, zoom = SAMPLE_SOURCES["xiamen-z18"]
    tiles = ds.ROOT.parent / "shared" / "data" / folder
    if not tiles.is_dir():
        pytest.skip(f"{tiles} is absent (sample data: ../shared/data)")
    west, south, east, north = (float(v) for v in VALUES["helmTest"]["bbox"].split(","))
    needed = list(morecantile.tms.get("WebMercatorQuad").tiles(west, south, east, north, [zoom]))
    assert 1 <= len(needed) <= 4, len(needed)  # tiny: a few tiles
    missing = [t for t in needed if not list((tiles / str(zoom) / str(t.x)).glob(f"{t.y}.*"))]
    assert not missing, missing


# -- the quick-start bundle --------------------------------------------------------------------------------
def test_bundle_replaces_the_external_endpoints(helm: Any) -> None:
    docs = ds.documents(ds.render(BUNDLE_ON, profile="dev"))
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for c in ("kafka", "minio", "prefect"):
        for kind in ("Deployment", "Service", "PersistentVolumeClaim", "ServiceAccount", "NetworkPolicy"):
            assert (kind, f"{ds.RELEASE}-{c}") in names, (kind, c)
    (config,) = [d for d in ds.of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-config")]
    suffix = f"{ds.NAMESPACE}.svc.cluster.local"
    assert config["data"]["URBANFABRIC_KAFKA"] == f"{ds.RELEASE}-kafka.{suffix}:9092"
    assert config["data"]["URBANFABRIC_S3_ENDPOINT"] == f"{ds.RELEASE}-minio.{suffix}:9000"
    assert config["data"]["PREFECT_API_URL"] == f"http://{ds.RELEASE}-prefect.{suffix}:4200/api"
    (topics,) = [j for j in ds.of_kind(docs, "Job") if j["metadata"]["name"].endswith("-topics")]
    env = {e["name"]: e.get("value") for e in topics["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert f"{ds.RELEASE}-kafka.{suffix}:9092" in env.values()
    # Each bundled Service reaches its pods' named port; MinIO's root user is the existing Secret's.
    for c in ("kafka", "minio", "prefect"):
        (svc,) = [d for d in ds.of_kind(docs, "Service") if d["metadata"]["name"] == f"{ds.RELEASE}-{c}"]
        (dep,) = [d for d in ds.of_kind(docs, "Deployment") if d["metadata"]["name"] == f"{ds.RELEASE}-{c}"]
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= {p["name"] for p in container["ports"]}
    (minio,) = [d for d in ds.of_kind(docs, "Deployment") if d["metadata"]["name"] == f"{ds.RELEASE}-minio"]
    env = {e["name"]: e for e in minio["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MINIO_ROOT_USER"]["valueFrom"]["secretKeyRef"] == {"name": "urbanfabric-s3", "key": "AWS_ACCESS_KEY_ID"}
    assert not ds.of_kind(docs, "Secret")
    # Off (the default): none of it, and the external endpoints are used.
    plain = ds.documents(ds.render({}, profile="dev"))
    assert not [d for d in plain if d["metadata"]["name"] in {f"{ds.RELEASE}-{c}" for c in ("kafka", "minio", "prefect")}]


def test_bundle_prefect_runs_the_prefect_version_the_flows_pin(helm: Any) -> None:
    pinned = re.search(r"^prefect==([0-9.]+)", (ds.ROOT / "requirements.txt").read_text(), re.MULTILINE).group(1)
    assert VALUES["bundle"]["prefect"]["image"].split(":")[1].startswith(pinned + "-")


@pytest.mark.parametrize("extra", [BUNDLE_ON, {"sampleData": {"existingClaim": "samples"}}])
def test_bundle_seed_and_test_pod_validate_and_are_hardened(helm: Any, extra: dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = ds.documents(ds.render(extra, profile="gpu"))
    for doc in docs:
        if ds.is_builtin(doc):
            kubernetes_validate.validate(doc, ds.KUBE_VERSION, strict=True)
    for doc, spec in ds.pod_specs(docs):
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["automountServiceAccountToken"] is False
        for c in spec["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, doc["metadata"]["name"]
            assert c["resources"]["requests"], doc["metadata"]["name"]


# -- docs/deploy.md against the chart -------------------------------------------------------------------
SCHEMA = __import__("json").loads((ds.CHART / "values.schema.json").read_text())


def _children(node: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """Schemas of ``node``'s child ``key`` (``<…>`` or ``*``: any child) in values.schema.json."""
    props = node.get("properties", {})
    patterns = node.get("patternProperties", {})
    extra = node.get("additionalProperties")
    if re.fullmatch(r"<[^>]+>|\*", key):
        found = list(props.values()) + list(patterns.values())
        return found + ([extra] if isinstance(extra, dict) else [])
    if key in props:
        return [props[key]]
    found = [v for p, v in patterns.items() if re.search(p, key)]
    return found or ([extra] if isinstance(extra, dict) else [])


def documented_path_exists(path: str) -> bool:
    """Whether a value path is in the chart's schema (which rejects unknown keys): ``<key>``,
    ``<name>`` or ``*`` for any key, ``{a,b}`` for each of a and b."""
    alt = re.search(r"\{([^}]*)\}", path)
    if alt:
        return all(documented_path_exists(path[:alt.start()] + a + path[alt.end():]) for a in alt.group(1).split(","))
    nodes = [SCHEMA]
    for part in path.split("."):
        nodes = [c for n in nodes for c in _children(n, part)]
    return bool(nodes)


def documented_value_paths() -> set[str]:
    """Chart value paths docs/deploy.md names: `--set a.b=…` in `helm install`/`upgrade` commands
    of this chart, and backticked `a.b.c` whose first part is a top-level value."""
    text = (ds.ROOT / "docs" / "deploy.md").read_text()
    top = set(VALUES)
    paths = set()
    for command in re.findall(r"helm (?:install|upgrade)[^\n]*(?:\\\n[^\n]*)*", text):
        if not re.search(r"charts/urbanfabric|oci://\S*/urbanfabric|helm (?:install|upgrade) …", command):
            continue  # another chart's values (MinIO's, Prefect's)
        for assignment in re.findall(r"--set(?:-string)? '?([^ '`]+)", command):
            paths |= {a.split("=")[0] for a in assignment.split(",")}
    for token in re.findall(r"`([a-zA-Z][\w.<>*{},-]*)`", text):
        if "." in token and token.split(".")[0] in top and not token.endswith((".yaml", ".py", ".json")):
            paths.add(token)
    return paths


def test_every_value_docs_deploy_names_exists() -> None:
    documented = documented_value_paths()
    assert len(documented) > 30 and "bundle.prefect.image" in documented, sorted(documented)  # the scan finds them
    missing = sorted(p for p in documented if not documented_path_exists(p))
    assert not missing, f"docs/deploy.md names values the chart lacks: {missing}"
    # Not vacuous: a misspelt path, and Prefect's own chart setting, are not the chart's.
    assert not documented_path_exists("bundle.prefect.imageTag")
    assert not documented_path_exists("global.prefect.image.prefectTag")
    assert "global.prefect.image.prefectTag" not in documented  # another chart's --set is not collected


def test_the_model_defaults_docs_deploy_lists_are_the_job_specs_and_served() -> None:
    from urbanfabric.job_spec import JobSpec

    text = (ds.ROOT / "docs" / "deploy.md").read_text()
    line = re.search(r"models: defaults \((.*?);", text, re.DOTALL).group(1)
    documented = set(re.findall(r"`([a-z-]+:v[0-9][\w.-]*)`", line))
    spec = JobSpec(area=(118.0, 24.0, 118.001, 24.001), imagery="sample:xiamen-z18")
    defaults = {spec.segmentation.model, *spec.models.model_dump().values()}
    assert documented == defaults
    served = {f"{i['model']}:{i['version']}" for i in VALUES["inferenceServices"].values() if i["enabled"]}
    assert served <= defaults  # the chart serves the defaults' neural models


# -- model pods scale on a GPU-relevant signal ---------------------------------------------------------
def test_gpu_models_scale_on_predict_calls_in_flight(helm: Any, schemas_dir: Path) -> None:
    """gpu profile: the GPU predictors scale with KEDA on the mean number of predict calls in
    flight (KServe's request_predict_seconds histogram), not on CPU; the CPU classifiers keep
    their HPA. Valid against KServe's CRD."""
    import jsonschema

    docs = ds.documents(ds.render({}, profile="gpu"))
    schema = ds.strict_crd_schema(schemas_dir / "kserve" / "serving.kserve.io_inferenceservices.yaml")
    by_model = {}
    for doc in ds.of_kind(docs, "InferenceService"):
        jsonschema.validate(doc, schema)
        env = {e["name"]: e["value"] for e in doc["spec"]["predictor"]["model"]["env"]}
        by_model[env["UF_ISVC_MODEL"]] = (doc, env)
    for model in ("footprint-unet", "roof-material"):
        doc, env = by_model[model]
        assert doc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
        (metric,) = doc["spec"]["predictor"]["autoScaling"]["metrics"]
        query = metric["external"]["metric"]["query"]
        assert f'model_name="{model}-{env["UF_ISVC_VERSION"]}"' in query and "request_predict_seconds_sum" in query
        assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "2"}
        assert "scaleMetric" not in doc["spec"]["predictor"]
    for model in ("roof-shape", "facade-material"):
        doc, _ = by_model[model]
        assert doc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "hpa"
        assert doc["spec"]["predictor"]["scaleMetric"] == "cpu"


def test_concurrency_in_raw_deployment_needs_prometheus(helm: Any) -> None:
    with pytest.raises(helm.HelmRenderError) as info:
        ds.render({"modelServing": {"prometheusAddress": ""}}, profile="gpu")
    assert "inferenceServices.footprint-unet.scaleMetric" in str(info.value)
    assert "modelServing.prometheusAddress" in str(info.value)
    with pytest.raises(helm.HelmRenderError) as info:
        ds.render({"inferenceServices": {"roof-shape": {"scaleMetric": "rps"}}}, profile="gpu")
    assert "Serverless" in str(info.value)
    # Serverless: Knative's own concurrency autoscaler (KServe sets autoscaling.knative.dev/metric).
    docs = ds.documents(ds.render({"modelServing": {"deploymentMode": "Serverless"}}, profile="gpu"))
    for doc in ds.of_kind(docs, "InferenceService"):
        assert "autoScaling" not in doc["spec"]["predictor"]
        assert "autoscalerClass" not in " ".join(doc["metadata"]["annotations"])
