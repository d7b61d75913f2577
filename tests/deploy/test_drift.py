"""No drift between the chart, the image recipe (Dockerfile, services/entrypoint.py) and the code.

Every module the chart starts exists and accepts the flags it is given; every port, gRPC
service name, environment variable, Kafka topic, caller and model the chart names is the one
the code uses.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import deploy_support as ds
import pytest
import yaml
from urbanfabric import settings as config
from urbanfabric.io.model_repository import model_dir

SERVICES = config.SERVICE_NAMES
SERVE_MODEL = (ds.CHART / "files" / "serve_model.sh").read_text()


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return yaml.safe_load((ds.CHART / "values.yaml").read_text())


@pytest.fixture(scope="module")
def all_docs(helm: Any) -> list[dict[str, Any]]:
    """Documents of every rendering variant (profiles, Strimzi topics, Serverless, sample data)."""
    docs = []
    for profile in ds.PROFILES:
        docs += ds.documents(ds.render(profile=profile))
    docs += ds.documents(ds.render({"sampleData": {"existingClaim": "samples"},
                                    "prefect": {"apiKeySecret": {"name": "prefect-key", "key": "key"}}}))
    return docs


def test_services_and_ports_match_the_code(values: dict[str, Any]) -> None:
    assert tuple(values["services"]) == SERVICES
    defaults = config.Settings().services
    for name, svc in values["services"].items():
        assert f"127.0.0.1:{svc['port']}" == defaults[name], name
        server = (ds.ROOT / "services" / name / "server.py").read_text()
        # The probes ask the health service about the name the server registers.
        assert f'"{svc["grpcService"]}"' in server, (name, svc["grpcService"])


def test_every_started_command_resolves(all_docs: list[dict[str, Any]]) -> None:
    started = set()
    for doc, c in ds.containers(all_docs):
        command = c.get("command")
        if not command or command[:2] != ["python", "-m"]:
            continue
        module = command[2]
        started.add(module)
        assert ds.runnable_file(module), f"{doc['metadata']['name']}: python -m {module} resolves to nothing"
        flags = {a for a in c.get("args", []) if a.startswith("--")}
        if doc["kind"] != "Pod":  # the helm test's `run` flags are the job spec's (test_release.py parses them)
            assert flags <= ds.entrypoint_flags(module), (module, flags - ds.entrypoint_flags(module))
    assert started == {f"services.{s}.server" for s in SERVICES} | {
        "services.workers.tile_worker", "services.workers.building_worker", "flows.serve",
        "urbanfabric.cli.main", "urbanfabric.cli.seed"}


def test_chart_commands_match_the_local_stack() -> None:
    """The chart starts what urbanfabric.stack.definition starts (same modules and flags)."""
    source = (ds.ROOT / "services/lib/urbanfabric/stack/definition.py").read_text()
    assert '"-m", module, "--port", "{ports[grpc]}", "--metrics-port", "{ports[metrics]}"' in source
    assert 'module = f"services.{name}.server"' in source
    assert 'module = f"services.workers.{name}"' in source
    assert '"-m", "flows.serve"' in source
    assert '"-m", "services.modelserver", "--http-port"' in source


def test_images_run_what_the_chart_starts(values: dict[str, Any], all_docs: list[dict[str, Any]]) -> None:
    """Each image's own command (services/entrypoint.py, as the Dockerfile runs it) is the
    chart's; its ports, what it exposes and what its health check asks are the chart's."""
    commands = ds.literal_assign(ds.LAUNCHER, "COMMANDS")
    health = ds.literal_assign(ds.LAUNCHER, "HEALTH")
    df = ds.parse_dockerfile()
    assert set(values["images"]) == set(ds.images()) == set(commands)
    for doc, c in ds.containers(all_docs):
        if doc["kind"] != "Deployment" or doc["metadata"]["name"].endswith("model-gateway"):
            continue
        image = next(k for k, repo in values["images"].items() if c["image"].startswith(repo + ":"))
        fixed, defaults = commands[image]
        argv = fixed + defaults
        if image == "workers":
            # The chart picks the module, the image defaults to one of them.
            assert fixed == ["python", "-m"] == c["command"][:2] and ds.runnable_file(argv[2])
            assert ds.runnable_file(c["command"][2]) and c["command"][2].startswith("services.workers.")
            continue
        assert argv[:3] == c["command"], (image, argv, c["command"])
    for name, svc in values["services"].items():
        instructions = df.image({"SERVICE": name})
        fixed, cmd = commands[name]
        assert cmd[cmd.index("--port") + 1] == str(svc["port"])
        assert cmd[cmd.index("--metrics-port") + 1] == str(values["metricsPort"])
        assert ds.exposed(instructions) == {str(svc["port"]), str(values["metricsPort"])}, name
        assert health[name] == ("grpc", svc["port"], svc["grpcService"]), name
    # The flow runner: the runner webserver's port is exposed, health-checked and probed.
    flows = df.image({"SERVICE": "flows"})
    port = ds.env(flows, {"SERVICE": "flows"})["PREFECT_RUNNER_SERVER_PORT"]
    assert ds.exposed(flows) == {port} and health["flows"] == ("http", int(port), "/health")
    assert str(values["flows"]["healthPort"]) == port
    runner = next(c for d, c in ds.containers(all_docs)
                  if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-flows"))
    assert runner["livenessProbe"]["httpGet"]["path"] == health["flows"][2]
    # The model server: its HTTP port as the ServingRuntime declares and probes it.
    runtime = next(c for d, c in ds.containers(all_docs) if d["kind"] == "ServingRuntime")
    http = str(runtime["ports"][0]["containerPort"])
    modelserver = commands["modelserver"][1]
    assert modelserver[modelserver.index("--http-port") + 1] == http
    assert http in ds.exposed(df.image({"SERVICE": "modelserver"}))
    assert health["modelserver"] == ("http", int(http), runtime["readinessProbe"]["httpGet"]["path"])
    assert str(runtime["readinessProbe"]["httpGet"]["port"]) == http


def _prefect_settings() -> set[str]:
    from prefect.settings.legacy import _get_valid_setting_names
    from prefect.settings.models.root import Settings

    return set(_get_valid_setting_names(Settings))


def test_every_environment_variable_is_read_by_the_code(all_docs: list[dict[str, Any]]) -> None:
    names: set[str] = set()
    for doc in ds.of_kind(all_docs, "ConfigMap"):
        if doc["metadata"]["name"].endswith("-config"):
            names |= set(doc["data"])
    for _, c in ds.containers(all_docs):
        names |= {e["name"] for e in c.get("env", [])}
    read = ds.environ_reads()
    addr = re.compile(r"^URBANFABRIC_([A-Z]+)_ADDR$")
    assert 'f"URBANFABRIC_{name.upper()}_ADDR"' in (ds.ROOT / "services/lib/urbanfabric/settings.py").read_text()
    prefect = None
    unknown = []
    for name in sorted(names):
        if m := addr.match(name):
            ok = m.group(1).lower() in SERVICES
        elif name.startswith("URBANFABRIC_"):
            ok = name in read
        elif name.startswith("PREFECT_"):
            prefect = prefect if prefect is not None else _prefect_settings()
            ok = name in prefect
        elif name.startswith("UF_ISVC_"):
            ok = f"${name}" in SERVE_MODEL or f"${{{name}" in SERVE_MODEL  # the runtime's own script
        else:
            ok = False
        if not ok:
            unknown.append(name)
    assert not unknown, f"the chart sets variables no code reads: {unknown}"
    assert {f"URBANFABRIC_{s.upper()}_ADDR" for s in SERVICES} <= names
    assert {"URBANFABRIC_S3_ENDPOINT", "URBANFABRIC_S3_ACCESS_KEY", "URBANFABRIC_S3_SECRET_KEY",
            "URBANFABRIC_BUCKET", "URBANFABRIC_KAFKA", "PREFECT_API_URL", "URBANFABRIC_MODELSERVER_REST"} <= names


def test_model_protocol_is_one_the_client_knows(all_docs: list[dict[str, Any]]) -> None:
    tree = ast.parse((ds.ROOT / "services/lib/urbanfabric/runtime/model_client.py").read_text())
    (enum,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "InferenceProtocol"]
    members = {t.id for n in enum.body if isinstance(n, ast.Assign) for t in n.targets}
    protocols = {d["data"]["URBANFABRIC_MODEL_PROTOCOL"] for d in ds.of_kind(all_docs, "ConfigMap")
                 if "URBANFABRIC_MODEL_PROTOCOL" in d.get("data", {})}
    assert protocols == {"V2_REST"} and protocols <= members


def test_topics_match_the_bus(values: dict[str, Any]) -> None:
    bus = ds.ROOT / "services/lib/urbanfabric/runtime/bus.py"
    expected = [ds.literal_assign(bus, n) for n in ("TILES", "TILE_RESULTS", "BUILDINGS", "BUILDING_RESULTS", "DLQ")]
    assert values["kafka"]["topics"]["names"] == expected
    stack = ds.literal_assign(ds.ROOT / "services/lib/urbanfabric/stack/definition.py", "TOPICS")
    assert list(stack) == expected


def test_network_policy_callers_match_the_code() -> None:
    helpers = (ds.CHART / "templates" / "_helpers.tpl").read_text()
    block = helpers.split('define "urbanfabric.callers" -}}', 1)[1].split("{{- end -}}", 1)[0]
    callers = yaml.safe_load(block)
    component_of = {"services/workers/tile_worker.py": "tile-worker",
                    "services/workers/building_worker.py": "building-worker",
                    "flows/map_area.py": "flows",
                    # the fine-tune flow's step (and urbanfabric learn's, outside the cluster)
                    "services/lib/urbanfabric/runtime/learning.py": "flows"}
    # User-side commands that run outside the cluster (against the local stack or a
    # port-forward), so no in-cluster network policy admits them.
    outside = {"services/lib/urbanfabric/cli/heatmaps.py"}
    from_code = {service: {component_of[m] for m in modules if m not in outside}
                 for service, modules in ds.stub_callers().items()}
    assert {k: set(v) for k, v in callers.items() if k in SERVICES} == from_code
    model_users = set()
    for path in ds.python_sources():
        rel = path.relative_to(ds.ROOT).as_posix()
        if "model_client(" in path.read_text() and not rel.endswith("runtime/connections.py"):
            model_users.add(component_of.get(rel) or rel.split("/")[1])
    assert set(callers["modelgateway"]) == model_users


def test_inference_services_serve_known_models(values: dict[str, Any]) -> None:
    known = ds.literal_assign(ds.ROOT / "services/lib/urbanfabric/io/model_repository.py", "MODEL_MODULES")
    for key, isvc in values["inferenceServices"].items():
        assert isvc["model"] in known, key
    flags = ds.entrypoint_flags("services.modelserver")
    used = set(re.findall(r"(--[a-z][a-z-]+)", SERVE_MODEL))
    assert used <= flags, used - flags
    # The job spec asks for the enabled versions by default (urbanfabric.job_spec); the
    # disabled ones (extra ensemble members) must at least be shipped versions.
    from urbanfabric.footprints.options import SegmentationOptions
    from urbanfabric.job_spec import ModelVersions

    defaults = {SegmentationOptions().model, *ModelVersions().model_dump().values()}
    for key, isvc in values["inferenceServices"].items():
        if isvc["enabled"]:
            assert f'{isvc["model"]}:{isvc["version"]}' in defaults, key
        else:
            assert (model_dir(isvc["model"], isvc["version"]) / "config.json").exists(), key


def test_model_storage_layout_matches_the_model_server(values: dict[str, Any]) -> None:
    """storageUri s3://<bucket>/models/<model_dir>/<version> is where the code looks for it."""
    source = (ds.ROOT / "services/lib/urbanfabric/runtime/model_runner.py").read_text()
    assert 'return self.model.replace("-", "_")' in source  # ModelSpec.model_dir
    assert 'VERSION_FILES = ("config.json", "model.pt")' in source
    assert values["modelServing"]["storagePrefix"] == "models"


def test_worker_topics_and_groups_match_the_workers(values: dict[str, Any]) -> None:
    """What KEDA watches is what the workers consume: topic and group from each TaskSpec."""
    import importlib

    from urbanfabric.settings import Settings

    for name, w in values["workers"].items():
        spec = importlib.import_module(w["module"]).spec(Settings())
        assert (w["topic"], w["consumerGroup"]) == (spec.topic, f"urbanfabric-{spec.name}"), name
