"""The chart lints and renders for each profile; built-in kinds validate against Kubernetes."""

from __future__ import annotations

import copy
from typing import Any

import deploy_support as ds
import pytest
import yaml


@pytest.mark.parametrize("profile", [None, *ds.PROFILES])
def test_chart_lints_strict(helm: Any, profile: str | None) -> None:
    report = helm.lint(str(ds.CHART), ds.profile_values(profile) or None, strict=True,
                       namespace=ds.NAMESPACE, kube_version=f"v{ds.KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors
    assert not report["errors"] and not problems, report


@pytest.mark.parametrize("profile", ds.PROFILES)
def test_profile_renders_every_component(rendered: dict, profile: str) -> None:
    docs = rendered[profile]
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    prefix = f"{ds.RELEASE}-"
    for component in ("acquisition", "calibration", "segmentation", "materials", "attributes",
                      "intensity", "tile-worker", "building-worker", "flows", "model-gateway"):
        assert ("Deployment", prefix + component) in names
        assert ("ServiceAccount", prefix + component) in names
    for service in ("acquisition", "calibration", "segmentation", "materials", "attributes", "intensity"):
        assert ("Service", prefix + service) in names
        assert ("PodDisruptionBudget", prefix + service) in names
        assert ("NetworkPolicy", prefix + service) in names
    assert ("InferenceService", prefix + "footprint-unet") in names
    for isvc in ("roof-material", "roof-shape", "facade-material"):
        assert ("InferenceService", prefix + isvc) in names
    assert ("ServingRuntime", prefix + "modelserver") in names
    assert ("Job", prefix + "topics") in names
    assert ("Job", prefix + "models-check") in names
    assert ("ConfigMap", prefix + "config") in names
    # Credentials are referenced, never created: the chart renders no Secret at all.
    assert not ds.of_kind(docs, "Secret")


def test_profiles_differ_where_they_should(rendered: dict) -> None:
    dev, gpu = rendered["dev"], rendered["gpu"]
    assert not ds.of_kind(dev, "HorizontalPodAutoscaler")
    hpas = {d["spec"]["scaleTargetRef"]["name"] for d in ds.of_kind(gpu, "HorizontalPodAutoscaler")}
    assert hpas == {f"{ds.RELEASE}-{n}" for n in ("acquisition", "calibration", "segmentation", "materials",
                                                  "attributes", "intensity", "tile-worker", "building-worker")}
    # The gpu profile puts the segmentation and roof-material models on GPUs; the small
    # roof-shape and façade classifiers stay on CPU there (values-gpu.yaml).
    on_gpu = set()
    for doc in ds.of_kind(gpu, "InferenceService"):
        model = doc["spec"]["predictor"]["model"]
        env = {e["name"]: e["value"] for e in model["env"]}
        if env["UF_ISVC_MODEL"] in ("roof-shape", "facade-material"):
            assert env["UF_ISVC_DEVICE"] == "cpu" and "nvidia.com/gpu" not in model["resources"].get("limits", {})
            continue
        on_gpu.add(env["UF_ISVC_MODEL"])
        assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert env["UF_ISVC_DEVICE"] == "cuda"
        assert doc["spec"]["predictor"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert on_gpu == {"footprint-unet", "roof-material"}
    for doc in ds.of_kind(dev, "InferenceService"):
        model = doc["spec"]["predictor"]["model"]
        assert "nvidia.com/gpu" not in model["resources"].get("limits", {})
        assert {e["name"]: e["value"] for e in model["env"]}["UF_ISVC_DEVICE"] == "cpu"


@pytest.mark.parametrize("profile", ds.PROFILES)
def test_inference_services_point_at_versioned_model_storage(rendered: dict, profile: str) -> None:
    for doc in ds.of_kind(rendered[profile], "InferenceService"):
        predictor = doc["spec"]["predictor"]
        model = predictor["model"]
        env = {e["name"]: e["value"] for e in model["env"]}
        model_dir = env["UF_ISVC_MODEL"].replace("-", "_")
        assert model["storageUri"] == f"s3://urbanfabric/models/{model_dir}/{env['UF_ISVC_VERSION']}"
        assert predictor["serviceAccountName"] == f"{ds.RELEASE}-models"
        assert model["runtime"] == f"{ds.RELEASE}-modelserver"
        assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
        if "autoScaling" in predictor:  # RawDeployment on concurrency: KEDA (test_release.py)
            assert doc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
        else:
            assert predictor["scaleMetric"] and predictor["scaleTarget"] > 0
    (sa,) = [d for d in ds.of_kind(rendered[profile], "ServiceAccount") if d["metadata"]["name"].endswith("-models")]
    assert sa["secrets"] == [{"name": "urbanfabric-s3"}]


@pytest.mark.parametrize("profile", ds.PROFILES)
def test_pods_are_hardened(rendered: dict, profile: str) -> None:
    docs = rendered[profile]
    for doc, spec in ds.pod_specs(docs):
        assert spec["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
        assert spec["automountServiceAccountToken"] is False, doc["metadata"]["name"]
        assert spec["serviceAccountName"].startswith(ds.RELEASE)
    for doc, c in ds.containers(docs):
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] != "ServingRuntime":  # each InferenceService sizes its predictor
            assert c["resources"]["requests"], where
        if doc["kind"] == "InferenceService":
            continue  # the runtime container carries the security context
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, where
        assert sc["capabilities"]["drop"] == ["ALL"], where
        assert not c["image"].endswith(":latest") and (":" in c["image"] or "@" in c["image"]), where
    # No service account may talk to the API server: no RBAC objects at all.
    assert not [d for d in docs if d["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")]


@pytest.mark.parametrize("profile", ds.PROFILES)
def test_grpc_services_use_native_grpc_probes(rendered: dict, profile: str) -> None:
    values = ds.deep_merge(yaml.safe_load((ds.CHART / "values.yaml").read_text()), ds.profile_values(profile))
    for name, svc in values["services"].items():
        (dep,) = [d for d in ds.of_kind(rendered[profile], "Deployment") if d["metadata"]["name"] == f"{ds.RELEASE}-{name}"]
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"]["port"] == svc["port"], (name, probe)
        assert c["readinessProbe"]["grpc"]["service"] == svc["grpcService"]
        assert {p["containerPort"] for p in c["ports"]} == {svc["port"], values["metricsPort"]}


@pytest.mark.parametrize("profile", ds.PROFILES)
def test_credentials_only_from_existing_secrets(rendered: dict, profile: str) -> None:
    for doc, c in ds.containers(rendered[profile]):
        for env in c.get("env", []):
            sensitive = any(w in env["name"] for w in ("KEY", "SECRET", "PASSWORD", "TOKEN"))
            if sensitive:
                assert "value" not in env and "secretKeyRef" in env["valueFrom"], (doc["metadata"]["name"], env)
    config = ds.of_kind(rendered[profile], "ConfigMap")
    for cm in config:
        for key in cm["data"]:
            assert not any(w in key for w in ("ACCESS_KEY", "SECRET", "PASSWORD", "TOKEN")), key


@pytest.mark.parametrize("profile", ds.PROFILES)
def test_builtin_kinds_validate_against_kubernetes(rendered: dict, profile: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    builtin = [d for d in rendered[profile] if ds.is_builtin(d)]
    assert len(builtin) > 40
    for doc in builtin:
        kubernetes_validate.validate(doc, ds.KUBE_VERSION, strict=True)


def test_kubernetes_validate_catches_a_misspelt_field(rendered: dict) -> None:
    """The strict validation above is not vacuous: a misspelt field in a Deployment fails."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    dep = copy.deepcopy(ds.of_kind(rendered["dev"], "Deployment")[0])
    dep["spec"]["template"]["spec"]["containers"][0]["readynessProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, ds.KUBE_VERSION, strict=True)


def test_network_policies_admit_only_expected_callers(rendered: dict) -> None:
    docs = rendered["gpu"]
    policies = {d["metadata"]["name"]: d for d in ds.of_kind(docs, "NetworkPolicy")}

    def callers(name: str) -> set[str]:
        rules = policies[f"{ds.RELEASE}-{name}"]["spec"]["ingress"]
        return {peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
                for rule in rules for peer in rule.get("from", []) if "podSelector" in peer}

    assert callers("acquisition") == {"tile-worker", "flows"}
    assert callers("segmentation") == {"tile-worker"}
    assert callers("intensity") == {"building-worker"}
    assert callers("model-gateway") == {"segmentation", "materials", "flows"}
    assert callers("footprint-unet-predictor") == {"model-gateway"}
    for closed in ("tile-worker", "building-worker", "flows", "topics", "models-check", "seed", "helm-test"):
        assert policies[f"{ds.RELEASE}-{closed}"]["spec"]["ingress"] == []
    # Every pod the chart runs is selected by some policy.
    selected = [p["spec"]["podSelector"]["matchLabels"] for p in policies.values()]
    for doc, spec in ds.pod_specs(docs):
        labels = ds.pod_labels(doc)
        assert any(all(labels.get(k) == v for k, v in sel.items()) for sel in selected), doc["metadata"]["name"]


def test_model_gateway_routes_every_model_version(rendered: dict) -> None:
    docs = rendered["dev"]
    (cm,) = [d for d in ds.of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-model-gateway")]
    conf = cm["data"]["nginx.conf"]
    for doc in ds.of_kind(docs, "InferenceService"):
        env = {e["name"]: e["value"] for e in doc["spec"]["predictor"]["model"]["env"]}
        route = f"location ~ ^/v2/models/{env['UF_ISVC_MODEL']}-{env['UF_ISVC_VERSION']}(/|$)"
        assert route in conf
        assert f"{doc['metadata']['name']}-predictor.{ds.NAMESPACE}.svc.cluster.local" in conf
    (config,) = [d for d in ds.of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-config")]
    assert config["data"]["URBANFABRIC_MODELSERVER_REST"] == (
        f"http://{ds.RELEASE}-model-gateway.{ds.NAMESPACE}.svc.cluster.local:8080")


def test_topics_as_strimzi_resources(helm: Any) -> None:
    docs = ds.documents(ds.render({"kafka": {"topics": {"mode": "strimzi"}}}, profile="gpu"))
    topics = ds.of_kind(docs, "KafkaTopic")
    assert {t["spec"]["topicName"] for t in topics} == set(yaml.safe_load(
        (ds.CHART / "values.yaml").read_text())["kafka"]["topics"]["names"])
    assert all(t["metadata"]["labels"]["strimzi.io/cluster"] == "urbanfabric" for t in topics)
    assert all(t["spec"]["replicas"] == 3 for t in topics)
    assert not [j for j in ds.of_kind(docs, "Job") if j["metadata"]["name"].endswith("-topics")]


def test_services_read_models_from_the_store_the_check_job_checks(helm: Any) -> None:
    docs = ds.documents(ds.render({"modelServing": {"storagePrefix": "registry/models/"}}, profile="gpu"))
    (config,) = [d for d in ds.of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-config")]
    assert config["data"]["URBANFABRIC_MODEL_STORE"] == "s3://urbanfabric/registry/models"
    (check,) = [d for d in ds.of_kind(docs, "Job") if d["metadata"]["name"].endswith("-models-check")]
    assert check["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    (container,) = check["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "urbanfabric.cli.main", "models", "check"]
    assert container["envFrom"][0]["configMapRef"]["name"] == config["metadata"]["name"]
    off = ds.documents(ds.render({"modelServing": {"checkModels": False}}, profile="gpu"))
    assert not [d for d in ds.of_kind(off, "Job") if d["metadata"]["name"].endswith("-models-check")]


def test_workers_scale_on_kafka_lag_with_keda(helm: Any) -> None:
    lag = {"enabled": True, "metric": "kafkaLag", "minReplicas": 1, "maxReplicas": 6}
    docs = ds.documents(ds.render({"workers": {"tile-worker": {"autoscaling": lag}}}, profile="gpu"))
    (scaled,) = ds.of_kind(docs, "ScaledObject")
    assert scaled["metadata"]["name"] == f"{ds.RELEASE}-tile-worker"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka" and trigger["metadata"]["topic"] == "urbanfabric.tiles.v1"
    assert trigger["metadata"]["consumerGroup"] == "urbanfabric-tiles"
    (deploy,) = [d for d in ds.of_kind(docs, "Deployment") if d["metadata"]["name"] == f"{ds.RELEASE}-tile-worker"]
    assert "replicas" not in deploy["spec"]  # KEDA owns the count
    assert not [h for h in ds.of_kind(docs, "HorizontalPodAutoscaler") if h["metadata"]["name"].endswith("tile-worker")]
    plain = ds.documents(ds.render({}, profile="gpu"))
    assert not ds.of_kind(plain, "ScaledObject")
