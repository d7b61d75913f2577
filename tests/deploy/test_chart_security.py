"""The chart turns security on by default: every project process gets the service-token key from
an existing Secret, Kafka SASL and Prefect auth come from Secrets when configured, reflection
stays off, and no secret value is ever taken from values."""

from __future__ import annotations

from typing import Any

import deploy_support as ds
import pytest

def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def _project_containers(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for doc, c in ds.containers(docs):
        if doc["kind"] == "InferenceService" or c.get("name") in ("nginx", "create-topics"):
            continue  # the predictor's env merges into the ServingRuntime's; nginx runs no project code
        out.append((f"{doc['kind']}/{doc['metadata']['name']}/{c.get('name')}", c))
    return out


@pytest.mark.parametrize("profile", ds.PROFILES)
def test_every_project_container_gets_the_service_token_from_the_secret(rendered: dict, profile: str) -> None:
    found = _project_containers(rendered[profile])
    assert len(found) >= 9, [n for n, _ in found]  # six services, two workers, flows, model server, …
    for name, c in found:
        env = _env(c)
        assert "URBANFABRIC_SERVICE_TOKEN" in env, name
        ref = env["URBANFABRIC_SERVICE_TOKEN"]
        assert "value" not in ref, name  # never a literal
        assert ref["valueFrom"]["secretKeyRef"] == {"name": "urbanfabric-service-token", "key": "service-token"}, name
        assert "URBANFABRIC_GRPC_REFLECTION" not in env, name
        assert "URBANFABRIC_ALLOW_UNAUTHENTICATED" not in env, name


def test_missing_service_token_secret_is_rejected(helm: Any) -> None:
    with pytest.raises((helm.HelmValuesError, helm.HelmRenderError)) as info:
        ds.render({"security": {"serviceTokenSecret": {"name": ""}}}, profile="dev")
    assert "serviceTokenSecret" in str(info.value)


def test_kafka_sasl_prefect_auth_and_reflection_come_only_when_configured(helm: Any) -> None:
    values = {"kafka": {"sasl": {"existingSecret": "kafka-user"}},
              "prefect": {"authStringSecret": {"name": "prefect-auth"}},
              "security": {"grpcReflection": True}}
    docs = ds.documents(ds.render(values, profile="dev"))
    for name, c in _project_containers(docs):
        env = _env(c)
        assert env["URBANFABRIC_KAFKA_USERNAME"]["valueFrom"]["secretKeyRef"] == {"name": "kafka-user", "key": "username"}
        assert env["URBANFABRIC_KAFKA_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "kafka-user", "key": "password"}
        assert env["URBANFABRIC_KAFKA_MECHANISM"]["value"] == "SCRAM-SHA-512"
        assert env["PREFECT_API_AUTH_STRING"]["valueFrom"]["secretKeyRef"] == {"name": "prefect-auth", "key": "auth-string"}
        assert env["URBANFABRIC_GRPC_REFLECTION"]["value"] == "1", name
    (topics,) = [c for doc, c in ds.containers(docs) if c.get("name") == "create-topics"]
    assert "URBANFABRIC_KAFKA_PASSWORD" in _env(topics)
    plain = ds.documents(ds.render(profile="dev"))
    for name, c in _project_containers(plain):
        assert not {"URBANFABRIC_KAFKA_USERNAME", "PREFECT_API_AUTH_STRING"} & set(_env(c)), name


def test_secret_values_in_values_are_rejected(helm: Any) -> None:
    with pytest.raises(helm.HelmValuesError) as info:
        ds.render({"security": {"serviceToken": "hunter2"}}, profile="dev")
    assert "serviceToken" in str(info.value)
    with pytest.raises(helm.HelmValuesError):
        ds.render({"kafka": {"sasl": {"password": "hunter2"}}}, profile="dev")


def test_torchserve_predictors_get_the_service_token_from_the_secret(helm: Any) -> None:
    """modelServing.runtime: torchserve runs KServe's runtime, not ours, so the key the handler
    checks tokens against comes on each InferenceService's predictor."""
    docs = ds.documents(ds.render({"modelServing": {"runtime": "torchserve"}}, profile="gpu"))
    isvcs = ds.of_kind(docs, "InferenceService")
    assert isvcs
    for isvc in isvcs:
        env = _env(isvc["spec"]["predictor"]["model"])
        ref = env["URBANFABRIC_SERVICE_TOKEN"]
        assert "value" not in ref, isvc["metadata"]["name"]
        assert ref["valueFrom"]["secretKeyRef"] == {"name": "urbanfabric-service-token", "key": "service-token"}
        assert "URBANFABRIC_ALLOW_UNAUTHENTICATED" not in env
