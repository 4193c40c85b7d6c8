"""Static checks of collector-config/ and examples/: they parse, they reference only components
they define, they use real (current) collector component names, and the deployment examples
carry what otel-exec needs (host PID namespace, capabilities, BTF, /proc, node name).

Pure Python plus PyYAML; no collector, Docker or Kubernetes is run.
"""
from __future__ import annotations

import configparser
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.needs_yaml
yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
COLLECTOR_CONFIGS = sorted((ROOT / "collector-config").glob("*.yaml"))  # for Kubernetes
HOST_COLLECTOR_CONFIGS = sorted((ROOT / "collector-config" / "host").glob("*.yaml"))
EXAMPLE_AGENT_CONFIG = ROOT / "otel_exec" / "_systemd" / "config.yaml"
COMPOSE_FILE = ROOT / "examples" / "docker-compose.yaml"
COMPOSE_COLLECTOR = ROOT / "examples" / "compose" / "otel-collector.yaml"
COMPOSE_LOKI = ROOT / "examples" / "compose" / "loki.yaml"
GRAFANA_COMPOSE = ROOT / "examples" / "compose" / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
GRAFANA_TEMPO_LOKI = ROOT / "examples" / "grafana" / "tempo-loki-datasources.yaml"
K8S_MANIFEST = ROOT / "deploy" / "kubernetes" / "otel-exec.yaml"  # rendered from deploy/helm/otel-exec
SYSTEMD_UNIT = ROOT / "otel_exec" / "_systemd" / "otel-exec.service"
TRACED_APP = ROOT / "examples" / "traced_app.py"

# Component types of the OpenTelemetry Collector contrib distribution that these configs may use.
# Where this comes from (checked 2026 against stored copies of the upstream repositories):
#   * open-telemetry/opentelemetry-collector-releases, distributions/otelcol-contrib/manifest.yaml
#     (v0.136.0): the modules in the contrib image - otlpreceiver, batchprocessor,
#     memorylimiterprocessor, groupbyattrsprocessor, k8sattributesprocessor,
#     resourcedetectionprocessor, debugexporter, otlpexporter, otlphttpexporter,
#     healthcheckextension.
#   * each module's metadata.yaml `type:` for the name used in configs (groupbyattrs,
#     memory_limiter, batch, health_check, otlp receiver - the otlp receiver kept its name,
#     see processor/k8sattributesprocessor/testdata/e2e/*/collector/configmap.yaml).
#   * the lower_snake_case renames, which keep the old name as a deprecated alias:
#       exporter otlp -> otlp_grpc, otlphttp -> otlp_http   (collector v0.144.0,
#         open-telemetry/opentelemetry-collector#14403, #14397)
#       processor k8sattributes -> k8s_attributes            (contrib v0.146.0,
#         open-telemetry/opentelemetry-collector-contrib#45901)
#       processor resourcedetection -> resource_detection    (contrib v0.153.0,
#         open-telemetry/opentelemetry-collector-contrib#48525)
# Only components actually verified are listed; extend deliberately.
CONTRIB_COMPONENT_TYPES: dict[str, set[str]] = {
    "receivers": {"otlp"},
    "processors": {"batch", "memory_limiter", "groupbyattrs", "k8s_attributes", "resource_detection"},
    "exporters": {"debug", "otlp_grpc", "otlp_http"},
    "extensions": {"health_check"},
    "connectors": set(),
}
# Still accepted by current collectors, but deprecated: the configs should not use them.
DEPRECATED_ALIASES: dict[str, dict[str, str]] = {
    "exporters": {"otlp": "otlp_grpc", "otlphttp": "otlp_http"},
    "processors": {"k8sattributes": "k8s_attributes", "resourcedetection": "resource_detection"},
}
# The newest rename above: a collector image older than this does not know every name used.
MIN_CONTRIB_VERSION = (0, 153, 0)

SIGNALS = ("traces", "logs", "metrics", "profiles")
NEEDED_CAPS = {"BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH", "SYS_RESOURCE", "SYS_NICE", "SETPCAP"}
ENV_DEFAULT = re.compile(r"^\$\{env:[A-Za-z_][A-Za-z0-9_]*:-(?P<default>.*)\}$")


def load_yaml(path: Path):
    with path.open() as f:
        return yaml.safe_load(f)


def component_type(component_id: str) -> str:
    """`otlp_http/loki` -> `otlp_http`."""
    return component_id.split("/", 1)[0]


def resolved(value: str) -> str:
    """The default of a `${env:NAME:-default}` value, or the value itself."""
    m = ENV_DEFAULT.match(str(value))
    return m.group("default") if m else str(value)


def pipeline_signal(pipeline_id: str) -> str:
    return component_type(pipeline_id)


# --------------------------------------------------------------------------- collector configs

ALL_COLLECTOR_CONFIGS = COLLECTOR_CONFIGS + HOST_COLLECTOR_CONFIGS + [COMPOSE_COLLECTOR]


def test_the_three_collector_configs_exist():
    assert {p.name for p in COLLECTOR_CONFIGS} >= {"loki.yaml", "jaeger.yaml", "tempo-loki.yaml"}


@pytest.fixture(params=ALL_COLLECTOR_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def collector(request):
    return request.param, load_yaml(request.param)


def test_pipeline_components_are_defined(collector):
    path, cfg = collector
    service = cfg["service"]
    for pipeline_id, pipeline in service["pipelines"].items():
        assert pipeline_signal(pipeline_id) in SIGNALS, pipeline_id
        assert pipeline.get("receivers"), f"{pipeline_id} has no receivers"
        assert pipeline.get("exporters"), f"{pipeline_id} has no exporters"
        for kind in ("receivers", "processors", "exporters"):
            defined = cfg.get(kind) or {}
            for component_id in pipeline.get(kind) or []:
                assert component_id in defined, f"{path.name}: {pipeline_id} uses undefined {kind[:-1]} {component_id}"


def test_service_extensions_are_defined(collector):
    path, cfg = collector
    defined = cfg.get("extensions") or {}
    for ext in cfg["service"].get("extensions") or []:
        assert ext in defined, f"{path.name}: service.extensions lists undefined {ext}"


def test_defined_components_are_used(collector):
    """A defined but unused component is usually a typo in a pipeline."""
    path, cfg = collector
    used = {kind: set() for kind in ("receivers", "processors", "exporters")}
    for pipeline in cfg["service"]["pipelines"].values():
        for kind, ids in used.items():
            ids.update(pipeline.get(kind) or [])
    for kind, ids in used.items():
        unused = set(cfg.get(kind) or {}) - ids
        assert not unused, f"{path.name}: {kind} defined but in no pipeline: {sorted(unused)}"
    unused_ext = set(cfg.get("extensions") or {}) - set(cfg["service"].get("extensions") or [])
    assert not unused_ext, f"{path.name}: extensions defined but not enabled: {sorted(unused_ext)}"


def test_component_types_are_real_contrib_components(collector):
    path, cfg = collector
    for kind, allowed in CONTRIB_COMPONENT_TYPES.items():
        for component_id in cfg.get(kind) or {}:
            ctype = component_type(component_id)
            renamed = DEPRECATED_ALIASES.get(kind, {}).get(ctype)
            assert renamed is None, f"{path.name}: {kind[:-1]} `{ctype}` is a deprecated alias of `{renamed}`"
            assert ctype in allowed, f"{path.name}: unknown {kind[:-1]} type `{ctype}` (not in the verified allow-list)"
    unknown_sections = set(cfg) - set(CONTRIB_COMPONENT_TYPES) - {"service"}
    assert not unknown_sections, f"{path.name}: unexpected top-level keys {sorted(unknown_sections)}"


def test_logs_and_traces_pipelines_exist(collector):
    path, cfg = collector
    signals = {pipeline_signal(p) for p in cfg["service"]["pipelines"]}
    assert {"logs", "traces"} <= signals, f"{path.name}: pipelines for {sorted(signals)}"


def test_otlp_receiver_listens_on_all_interfaces(collector):
    _, cfg = collector
    protocols = cfg["receivers"]["otlp"]["protocols"]
    assert resolved(protocols["grpc"]["endpoint"]) == "0.0.0.0:4317"
    assert resolved(protocols["http"]["endpoint"]) == "0.0.0.0:4318"
    for pipeline_id in ("logs", "traces"):
        assert "otlp" in cfg["service"]["pipelines"][pipeline_id]["receivers"]


def test_groupbyattrs_lifts_container_id(collector):
    path, cfg = collector
    groupers = {k: v for k, v in cfg["processors"].items() if component_type(k) == "groupbyattrs"}
    assert groupers, f"{path.name}: no groupbyattrs processor"
    for grouper in groupers.values():
        assert "container.id" in grouper["keys"]
    for pipeline_id in ("logs", "traces"):
        processors = cfg["service"]["pipelines"][pipeline_id]["processors"]
        assert any(component_type(p) == "groupbyattrs" for p in processors), f"{path.name}: {pipeline_id}"


def test_memory_limiter_first_and_batch_last(collector):
    path, cfg = collector
    for pipeline_id, pipeline in cfg["service"]["pipelines"].items():
        processors = [component_type(p) for p in pipeline.get("processors") or []]
        assert processors and processors[0] == "memory_limiter", f"{path.name}: {pipeline_id}: {processors}"
        assert processors[-1] == "batch", f"{path.name}: {pipeline_id}: {processors}"


@pytest.mark.parametrize("path", COLLECTOR_CONFIGS, ids=lambda p: p.name)
def test_k8s_attributes_associates_pods_by_container_id(path):
    cfg = load_yaml(path)
    k8s = {k: v for k, v in cfg["processors"].items() if component_type(k) == "k8s_attributes"}
    assert k8s, f"{path.name}: no k8s_attributes processor"
    for proc in k8s.values():
        sources = [s for assoc in proc["pod_association"] for s in assoc["sources"]]
        assert {"from": "resource_attribute", "name": "container.id"} in sources
    for pipeline_id in ("logs", "traces"):
        processors = [component_type(p) for p in cfg["service"]["pipelines"][pipeline_id]["processors"]]
        assert "k8s_attributes" in processors, f"{path.name}: {pipeline_id}"
        # container.id must be a resource attribute by the time k8s_attributes looks for it.
        assert processors.index("groupbyattrs") < processors.index("k8s_attributes"), f"{path.name}: {pipeline_id}"


@pytest.mark.parametrize("path", [COMPOSE_COLLECTOR, *HOST_COLLECTOR_CONFIGS], ids=lambda p: str(p.relative_to(ROOT)))
def test_host_collectors_have_no_k8s_attributes(path):
    """Outside Kubernetes the processor cannot reach an API server and the collector would not start."""
    cfg = load_yaml(path)
    assert not any(component_type(k) == "k8s_attributes" for k in cfg["processors"])


def test_every_backend_has_a_host_variant():
    """The same backends and pipelines as the Kubernetes file, only k8s_attributes left out."""
    assert [p.name for p in HOST_COLLECTOR_CONFIGS] == [p.name for p in COLLECTOR_CONFIGS]
    for k8s_path, host_path in zip(COLLECTOR_CONFIGS, HOST_COLLECTOR_CONFIGS):
        k8s, host = load_yaml(k8s_path), load_yaml(host_path)
        assert k8s["exporters"].keys() == host["exporters"].keys(), host_path.name
        for pipeline_id, pipeline in k8s["service"]["pipelines"].items():
            expected = [p for p in pipeline.get("processors") or [] if component_type(p) != "k8s_attributes"]
            assert host["service"]["pipelines"][pipeline_id]["processors"] == expected, (host_path.name, pipeline_id)
            assert host["service"]["pipelines"][pipeline_id]["exporters"] == pipeline["exporters"]


@pytest.mark.parametrize("path", [ROOT / "collector-config" / "loki.yaml", ROOT / "collector-config" / "host" / "loki.yaml"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_loki_config_says_where_traces_go(path):
    """Loki stores no traces: the file says so and how to stop the agent sending them."""
    assert exporters_of(load_yaml(path), "traces") == ["debug"]
    text = path.read_text()
    assert "OTEL_TRACES_EXPORTER=none" in text and "Loki stores logs only" in text


def exporters_of(cfg, signal: str) -> list[str]:
    return [
        e
        for pid, p in cfg["service"]["pipelines"].items()
        if pipeline_signal(pid) == signal
        for e in p["exporters"]
    ]


def test_backends_are_wired_as_named():
    configs = {p.name: load_yaml(p) for p in COLLECTOR_CONFIGS}

    def loki_endpoints(cfg):
        return [
            resolved(cfg["exporters"][e]["endpoint"])
            for e in exporters_of(cfg, "logs")
            if component_type(e) == "otlp_http"
        ]

    for name in ("loki.yaml", "tempo-loki.yaml"):
        endpoints = loki_endpoints(configs[name])
        assert endpoints and all(e.rstrip("/").endswith("/otlp") for e in endpoints), (name, endpoints)

    jaeger = [e for e in exporters_of(configs["jaeger.yaml"], "traces") if component_type(e) == "otlp_grpc"]
    assert jaeger and all(resolved(configs["jaeger.yaml"]["exporters"][e]["endpoint"]).endswith(":4317") for e in jaeger)
    tempo = [e for e in exporters_of(configs["tempo-loki.yaml"], "traces") if component_type(e) == "otlp_grpc"]
    assert tempo and all("tempo" in e for e in tempo)

    compose = load_yaml(COMPOSE_COLLECTOR)
    assert [resolved(compose["exporters"][e]["endpoint"]) for e in exporters_of(compose, "traces")] == ["jaeger:4317"]
    assert [resolved(compose["exporters"][e]["endpoint"]) for e in exporters_of(compose, "logs")] == [
        "http://loki:3100/otlp"
    ]


# --------------------------------------------------------------------------- docker compose


def compose():
    return load_yaml(COMPOSE_FILE)


def image_of(service: dict) -> tuple[str, str]:
    repo, _, tag = service["image"].rpartition(":")
    return repo, tag


def test_compose_services_and_images():
    services = compose()["services"]
    expected = {
        "otel-collector": "otel/opentelemetry-collector-contrib",
        "jaeger": "jaegertracing/jaeger",
        "loki": "grafana/loki",
        "grafana": "grafana/grafana",
    }
    for name, repo in expected.items():
        assert name in services, name
        image_repo, tag = image_of(services[name])
        assert image_repo == repo, (name, services[name]["image"])
        assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"{name}: pin a release, not {tag!r}"
    # otel-exec runs on the host, not in the stack (a commented service shows the container way).
    assert "otel-exec" not in services


def test_compose_collector_is_new_enough_for_the_component_names():
    _, tag = image_of(compose()["services"]["otel-collector"])
    assert tuple(int(x) for x in tag.split(".")) >= MIN_CONTRIB_VERSION


def test_compose_collector_reachable_from_the_host():
    ports = [str(p) for p in compose()["services"]["otel-collector"]["ports"]]
    assert any(p.endswith(":4317") for p in ports), ports
    assert any(p.endswith(":4318") for p in ports), ports


def test_compose_mounted_files_exist_and_parse():
    for name, service in compose()["services"].items():
        for volume in service.get("volumes") or []:
            source = str(volume).split(":", 1)[0]
            if not source.startswith("."):
                continue  # named volume
            path = (COMPOSE_FILE.parent / source).resolve()
            assert path.exists(), f"{name} mounts missing {source}"
            for f in [path] if path.is_file() else sorted(path.rglob("*.yaml")):
                assert load_yaml(f) is not None, f


def test_compose_collector_mounts_its_config():
    service = compose()["services"]["otel-collector"]
    config_arg = next(a for a in service["command"] if a.startswith("--config="))
    target = config_arg.split("=", 1)[1]
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in service["volumes"]}
    assert (COMPOSE_FILE.parent / mounts[target]).resolve() == COMPOSE_COLLECTOR


def test_loki_accepts_otlp():
    cfg = load_yaml(COMPOSE_LOKI)
    assert cfg["limits_config"]["allow_structured_metadata"] is True
    schemas = cfg["schema_config"]["configs"]
    assert schemas[-1]["schema"] == "v13" and schemas[-1]["store"] == "tsdb"
    loki_cmd = compose()["services"]["loki"]["command"]
    assert any(a.startswith("-config.file=") for a in loki_cmd)


# --------------------------------------------------------------------------- grafana provisioning


def datasources(path: Path) -> dict[str, dict]:
    doc = load_yaml(path)
    assert doc["apiVersion"] == 1
    return {ds["type"]: ds for ds in doc["datasources"]}


@pytest.mark.parametrize(
    "path, trace_type",
    [(GRAFANA_COMPOSE, "jaeger"), (GRAFANA_TEMPO_LOKI, "tempo")],
    ids=["compose-jaeger", "tempo-loki"],
)
def test_grafana_links_logs_and_traces(path, trace_type):
    ds = datasources(path)
    loki, traces = ds["loki"], ds[trace_type]
    fields = loki["jsonData"]["derivedFields"]
    assert any(
        f["matcherType"] == "label" and f["matcherRegex"] == "trace_id" and f["datasourceUid"] == traces["uid"]
        for f in fields
    ), fields
    to_logs = traces["jsonData"]["tracesToLogsV2"]
    assert to_logs["datasourceUid"] == loki["uid"]
    if to_logs.get("customQuery"):
        assert "trace_id" in to_logs["query"]


@pytest.mark.parametrize("path", [GRAFANA_COMPOSE, GRAFANA_TEMPO_LOKI], ids=lambda p: p.name)
def test_grafana_template_variables_are_escaped(path):
    """Grafana expands $VAR / ${VAR} from its environment in provisioning files; Grafana's own
    ${__...} variables must be written $${__...}."""
    text = path.read_text()
    assert not re.search(r"(?<!\$)\$\{__", text)
    assert "$${__" in text


# --------------------------------------------------------------------------- kubernetes


def k8s_docs() -> list[dict]:
    with K8S_MANIFEST.open() as f:
        return [d for d in yaml.safe_load_all(f) if d]


def daemonset() -> dict:
    return next(d for d in k8s_docs() if d["kind"] == "DaemonSet")


def agent_container() -> dict:
    containers = daemonset()["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "otel-exec")


def test_k8s_manifest_kinds():
    docs = k8s_docs()
    kinds = {d["kind"]: d for d in docs}
    assert {"Namespace", "ServiceAccount", "DaemonSet"} <= set(kinds)
    for d in docs:
        assert d["apiVersion"] and d["metadata"]["name"]
    namespace = kinds["Namespace"]["metadata"]["name"]
    assert kinds["ServiceAccount"]["metadata"]["namespace"] == namespace
    assert kinds["DaemonSet"]["metadata"]["namespace"] == namespace
    pod = kinds["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == kinds["ServiceAccount"]["metadata"]["name"]
    # hostPID and hostPath are outside the baseline Pod Security Standard.
    assert kinds["Namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_daemonset_selector_matches_template():
    ds = daemonset()
    selector = ds["spec"]["selector"]["matchLabels"]
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()


def test_daemonset_host_pid_and_every_node():
    pod = daemonset()["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    assert {"operator": "Exists"} in pod["tolerations"]


def test_daemonset_capabilities():
    sc = agent_container()["securityContext"]
    assert set(sc["capabilities"]["add"]) >= NEEDED_CAPS
    assert "SYS_ADMIN" not in sc["capabilities"]["add"]
    assert sc["privileged"] is False


def test_daemonset_env():
    env = agent_container()["env"]
    names = [e["name"] for e in env]
    by_name = {e["name"]: e for e in env}
    node = by_name["NODE_NAME"]
    assert node["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    attrs = by_name["OTEL_RESOURCE_ATTRIBUTES"]["value"]
    assert "k8s.node.name=$(NODE_NAME)" in attrs
    # $(VAR) only expands variables defined earlier in the list.
    assert names.index("NODE_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")
    endpoint = by_name["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"]
    assert re.fullmatch(r"https?://[a-z0-9.-]+\.svc(\.cluster\.local)?:4317", endpoint), endpoint


def test_daemonset_host_mounts():
    pod = daemonset()["spec"]["template"]["spec"]
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    mounts = {m["name"]: m for m in agent_container()["volumeMounts"]}

    def mounted(path_options, read_only):
        for name, host_path in host_paths.items():
            if host_path in path_options and name in mounts:
                assert bool(mounts[name].get("readOnly")) is read_only, (name, mounts[name])
                return mounts[name]
        raise AssertionError(f"no hostPath mount of {path_options}")

    btf = mounted({"/sys/kernel/btf", "/sys"}, read_only=True)
    assert Path(btf["mountPath"]) in (Path("/sys/kernel/btf"), Path("/sys"))
    spool = mounted({"/var/lib/otel-exec"}, read_only=False)
    assert spool["mountPath"] == "/var/lib/otel-exec"
    # hostPID already shows the host's processes in /proc: no /proc mount.
    assert "/proc" not in host_paths.values()
    # The host's whole cgroup hierarchy, which otel_exec.host.cgroups finds by its root cgroup's id
    # wherever it is mounted (tests/test_cgroup_namespace.py).
    mounted({"/sys/fs/cgroup"}, read_only=True)
    # Every volume is mounted.
    assert {v["name"] for v in pod["volumes"]} == set(mounts)


def agent_settings(text: str):
    """An agent configuration file's values as the agent would take them."""
    from otel_exec import cli
    from otel_exec.config import layered, subcommand

    parser = cli.build_parser()
    args = parser.parse_args(["run", "--config", ""])
    return cli.config_from_args(layered(subcommand(parser, "run"), args, set(), yaml.safe_load(text), "example", {}))


def test_daemonset_reads_its_settings_from_the_config_map():
    from otel_exec.config import DEFAULT_CONFIG_FILE

    config_map = next(d for d in k8s_docs() if d["kind"] == "ConfigMap")
    pod = daemonset()["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v.get("configMap", {}).get("name") == config_map["metadata"]["name"]]
    (mount,) = [m for m in agent_container()["volumeMounts"] if m["name"] == volume["name"]]
    # A single file (subPath): a ConfigMap volume's directory is world-writable, which the agent refuses.
    assert mount["mountPath"] == DEFAULT_CONFIG_FILE and mount["subPath"] == "config.yaml" and mount["readOnly"]
    assert volume["configMap"]["defaultMode"] & 0o022 == 0
    assert agent_settings(config_map["data"]["config.yaml"]).exporters == ("otlp",)
    assert agent_container()["command"] == ["otel-exec", "run"]


def test_example_agent_config_is_valid():
    cfg = agent_settings(EXAMPLE_AGENT_CONFIG.read_text())
    assert cfg.exporters == ("otlp",) and cfg.endpoint == "http://localhost:4317"


def test_kubernetes_manifest_validates_against_the_schemas():
    """kubernetes-validate (the test extra) checks every document against the Kubernetes API
    schemas, rejecting unknown fields."""
    kv = Path(sys.executable).parent / "kubernetes-validate"
    out = subprocess.run([str(kv), "--strict", str(K8S_MANIFEST)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("passed") == len(k8s_docs()), out.stdout


# --------------------------------------------------------------------------- systemd


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(SYSTEMD_UNIT)
    return parser


def unit_values(key: str) -> list[str]:
    """Every value of a key that may repeat (configparser keeps only the last)."""
    return [line.split("=", 1)[1] for line in SYSTEMD_UNIT.read_text().splitlines() if line.startswith(key + "=")]


def test_systemd_unit_sections_and_exec():
    u = unit()
    assert {"Unit", "Service", "Install"} <= set(u.sections())
    exec_start = u["Service"]["ExecStart"].split()
    assert exec_start[:2] == ["/usr/local/bin/otel-exec", "run"]
    assert "--exporter" in exec_start and exec_start[exec_start.index("--exporter") + 1] == "otlp"
    assert u["Service"]["Restart"] == "always"
    assert u["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_unit_capabilities():
    service = unit()["Service"]
    for key in ("CapabilityBoundingSet", "AmbientCapabilities"):
        caps = set(service[key].split())
        assert caps >= {"CAP_" + c for c in NEEDED_CAPS}, key
        assert "CAP_SYS_ADMIN" not in caps
    assert service["NoNewPrivileges"] == "yes"


def test_systemd_unit_hardening_and_spool():
    service = unit()["Service"]
    assert service["ProtectSystem"] == "strict"
    assert service["StateDirectory"] == "otel-exec"
    # The agent must see every process.
    assert service.get("ProtectProc", "default") == "default"
    assert "PrivatePIDs" not in service
    env = dict(v.split("=", 1) for v in unit_values("Environment"))
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith(("http://", "https://"))


def test_systemd_unit_reads_the_config_file():
    """What the unit's comment promises is read: /etc/otel-exec/config.yaml (the agent's default,
    in a ConfigurationDirectory) and OTEL_EXEC_* / OTEL_* variables from /etc/default/otel-exec."""
    from otel_exec.config import DEFAULT_CONFIG_FILE

    service = unit()["Service"]
    assert DEFAULT_CONFIG_FILE == f"/etc/{service['ConfigurationDirectory']}/config.yaml"
    assert "--config" not in service["ExecStart"]  # the default path, read when present
    assert "-/etc/default/otel-exec" in unit_values("EnvironmentFile")
    text = SYSTEMD_UNIT.read_text()
    assert DEFAULT_CONFIG_FILE in text and "OTEL_EXEC_" in text


# --------------------------------------------------------------------------- traced_app.py


def test_traced_app_passes_trace_context_to_children():
    out = subprocess.run(
        [sys.executable, str(TRACED_APP), "--exporter", "none", "--cmd", 'echo "child TRACEPARENT=$TRACEPARENT"'],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    trace_id = re.search(r"^trace_id=([0-9a-f]{32})$", out, re.MULTILINE).group(1)
    child = re.search(r"^child TRACEPARENT=(\S+)$", out, re.MULTILINE).group(1)
    version, child_trace_id, parent_span_id, flags = child.split("-")
    assert (version, child_trace_id) == ("00", trace_id)
    assert re.fullmatch(r"[0-9a-f]{16}", parent_span_id) and parent_span_id != "0" * 16
    assert int(flags, 16) & 1  # sampled


def test_traced_app_env_names_follow_the_spec():
    sys.path.insert(0, str(TRACED_APP.parent))
    try:
        import traced_app
    finally:
        sys.path.pop(0)
    assert traced_app.env_var_name("traceparent") == "TRACEPARENT"
    assert traced_app.env_var_name("tracestate") == "TRACESTATE"
    assert traced_app.env_var_name("x-b3-traceid") == "X_B3_TRACEID"
    assert traced_app.env_var_name("1abc") == "_1ABC"


def test_compose_loki_keeps_the_default_limits_the_agent_fits():
    from otel_exec.export.otlp import shape
    from tests.helpers import loki

    limits = load_yaml(COMPOSE_LOKI)["limits_config"]
    assert limits["max_structured_metadata_entries_count"] == loki.MAX_METADATA_ENTRIES == shape.LOKI_MAX_ENTRIES
    assert limits["max_structured_metadata_size"] == "64KB" and loki.MAX_METADATA_BYTES == shape.LOKI_MAX_METADATA_BYTES
    assert limits["max_line_size"] == "256KB" and loki.MAX_LINE_BYTES == 256_000
