"""The Helm chart deploy/helm/otel-exec and the plain manifest rendered from it.

No Helm and no cluster: the chart is rendered by deploy/helm/render.py (the Go-template subset the
chart uses), its values are checked with jsonschema against values.schema.json, the renderings with
kubernetes-validate against the Kubernetes API schemas, and what the agent reads from them with the
agent's own code (its configuration loader, its path checks on a real tmpfs).
"""
from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from pathlib import Path

import jsonschema
import pytest
import yaml

from otel_exec import cli
from otel_exec.config import parse_layered
from otel_exec.export.otlp import attributes
from otel_exec.host import safefs
from tests.helpers import chart
from tests.helpers.agent_run import kernel_available

RENDER = chart.renderer()
DEFAULTS = RENDER.chart_values()
NODE = "node-a"

# Every option switched on that can be, in one rendering (the sidecar excludes otlp.headers).
ALL_ON = {
    "fullnameOverride": "exec-audit",
    "namespace": {"create": True},
    "image": {"repository": "registry.example.net/sec/otel-exec", "tag": "0.1.0-rc1", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "registry"}],
    "resourceAttributes": "k8s.cluster.name=prod,deployment.environment.name=production",
    "config": {
        "exclude_comm": ["pause"],
        "redact_pattern": ["token=(\\S+)"],
        "env_capture": "redacted",
        "no_field": ["stdin"],
        "sample_rate": 1,
        "container_only": False,
        "ringbuf_bytes": 8388608,
        "stats_interval": 60,
    },
    "extraEnv": [{"name": "OTEL_BLRP_SCHEDULE_DELAY", "value": "100"}],
    "privileged": True,
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
    "podAnnotations": {"team": "security"},
    "podLabels": {"tier": "node-agent"},
    "collector": {
        "enabled": True,
        "extraEnv": [{"name": "UPSTREAM_TOKEN", "valueFrom": {"secretKeyRef": {"name": "upstream", "key": "token"}}}],
    },
}
WITH_HEADERS = {"otlp": {"headers": "authorization=Bearer%20s3cr3t-t0ken,x-tenant=sec"}}
WITH_EXISTING_SECRET = {"otlp": {"existingSecret": "my-otlp-headers"}, "seccompProfile": "RuntimeDefault"}
RENDERINGS = {"defaults": {}, "all-on": ALL_ON, "headers": WITH_HEADERS, "existing-secret": WITH_EXISTING_SECRET}


def docs_of(values: dict) -> list[dict]:
    return [d for d in yaml.safe_load_all(RENDER.manifest(values)) if d]


def kind(docs: list[dict], name: str) -> list[dict]:
    return [d for d in docs if d["kind"] == name]


def pod_of(docs: list[dict]) -> dict:
    (ds,) = kind(docs, "DaemonSet")
    return ds["spec"]["template"]["spec"]


def agent_of(docs: list[dict]) -> dict:
    (agent,) = [c for c in pod_of(docs)["containers"] if c["name"] == "otel-exec"]
    return agent


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container["env"]}


def validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(chart.schema())


# --------------------------------------------------------------------------- values and schema


def test_schema_is_a_valid_draft7_schema():
    jsonschema.Draft7Validator.check_schema(chart.schema())


@pytest.mark.parametrize("name", RENDERINGS)
def test_values_validate_against_the_schema(name):
    errors = [e.message for e in validator().iter_errors(RENDER.merge(DEFAULTS, RENDERINGS[name]))]
    assert not errors, errors


# Each case: the values, and where the schema must find the fault (the JSON path).
BAD_VALUES: dict[str, tuple[dict, str]] = {
    "unknown top-level key": ({"imageTag": "1.0"}, ""),
    "unknown config key": ({"config": {"spooldir": "/x"}}, "config"),
    "OTLP headers in the ConfigMap": ({"config": {"header": ["authorization=Bearer x"]}}, "config"),
    "the spool directory in the config": ({"config": {"spool_dir": "/srv/spool"}}, "config"),
    "the ready file in the config": ({"config": {"ready_file": "/tmp/ready"}}, "config"),
    "a switch given as a string": ({"config": {"container_only": "yes"}}, "config/container_only"),
    "a value outside the choices": ({"config": {"env_capture": "everything"}}, "config/env_capture"),
    "a number given as a list": ({"config": {"stats_interval": [60]}}, "config/stats_interval"),
    "the agent pod's name as a resource attribute": ({"resourceAttributes": "k8s.pod.name=$(POD_NAME)"}, "resourceAttributes"),
    "the agent's namespace as a resource attribute": ({"resourceAttributes": "team=a,k8s.namespace.name=otel-exec"}, "resourceAttributes"),
    "resource attributes that are not key=value": ({"resourceAttributes": "prod"}, "resourceAttributes"),
    "headers with the sidecar": ({"collector": {"enabled": True}, "otlp": {"headers": "authorization=x"}}, "otlp/headers"),
    "headers that are not key=value": ({"otlp": {"headers": "Bearer abc"}}, "otlp/headers"),
    "an endpoint with spaces": ({"otlp": {"endpoint": "http://collector :4317"}}, "otlp/endpoint"),
    "an unknown protocol": ({"otlp": {"protocol": "http/json"}}, "otlp/protocol"),
    "privileged as a string": ({"privileged": "true"}, "privileged"),
    "an unknown seccomp profile": ({"seccompProfile": "Localhost"}, "seccompProfile"),
    "a relative spool path": ({"spool": {"hostPath": "var/lib/otel-exec"}}, "spool/hostPath"),
    "no image repository": ({"image": {"repository": ""}}, "image/repository"),
    "a probe period of 0": ({"probes": {"readiness": {"periodSeconds": 0}}}, "probes/readiness/periodSeconds"),
    "a grace period shorter than the agent's stop": ({"terminationGracePeriodSeconds": 5}, "terminationGracePeriodSeconds"),
    "an unknown resources key": ({"resources": {"request": {"cpu": "1"}}}, "resources"),
    "an uppercase object name": ({"fullnameOverride": "OtelExec"}, "fullnameOverride"),
}


@pytest.mark.parametrize("case", BAD_VALUES)
def test_bad_values_are_refused(case):
    values, where = BAD_VALUES[case]
    errors = list(validator().iter_errors(RENDER.merge(DEFAULTS, values)))
    assert ["/".join(map(str, e.absolute_path)) for e in errors] == [where], [e.message for e in errors]


def test_schema_config_keys_are_otel_exec_settings():
    """Every configuration-file key of `otel-exec run` (with its type, choices and repeatability),
    except the three the chart sets itself; regenerate with `python -m tests.helpers.chart`."""
    assert chart.schema()["properties"]["config"]["properties"] == chart.config_properties()


def test_chart_app_version_is_the_package_version():
    project = tomllib.loads((chart.ROOT / "pyproject.toml").read_text())["project"]
    assert yaml.safe_load((chart.CHART_DIR / "Chart.yaml").read_text())["appVersion"] == project["version"]
    assert agent_of(docs_of({}))["image"] == f"otel-exec:{project['version']}"


# --------------------------------------------------------------------------- renderings


def test_plain_manifest_is_the_chart_rendered():
    """deploy/kubernetes/otel-exec.yaml is generated: change the chart, then
    python3 deploy/helm/render.py --plain > deploy/kubernetes/otel-exec.yaml"""
    assert chart.PLAIN_MANIFEST.read_text() == RENDER.plain_manifest()


def test_renderings_validate_against_the_kubernetes_schemas(tmp_path):
    """kubernetes-validate (the test extra) against the API schemas of a recent Kubernetes,
    rejecting unknown fields: the plain manifest and a rendering per set of values."""
    files = [chart.PLAIN_MANIFEST]
    expected = len([d for d in yaml.safe_load_all(chart.PLAIN_MANIFEST.read_text()) if d])
    for name, values in RENDERINGS.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(RENDER.manifest(values))
        files.append(path)
        expected += len(docs_of(values))
    kv = Path(sys.executable).parent / "kubernetes-validate"
    out = subprocess.run([str(kv), "--strict", "-k", "1.37.0", *map(str, files)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("passed") == expected, out.stdout


def test_kinds_and_names():
    default = docs_of({})
    assert [d["kind"] for d in default] == ["ServiceAccount", "ConfigMap", "DaemonSet"]
    everything = docs_of(ALL_ON)
    assert [d["kind"] for d in everything] == ["Namespace", "ServiceAccount", "ConfigMap", "DaemonSet"]
    (namespace,) = kind(everything, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    for d in everything[1:]:
        assert d["metadata"]["namespace"] == namespace["metadata"]["name"]
        assert d["metadata"]["name"].startswith("exec-audit")
    assert [d["kind"] for d in docs_of(WITH_HEADERS)] == ["ServiceAccount", "Secret", "ConfigMap", "DaemonSet"]


def test_notes_render():
    notes = RENDER.render_chart({})["NOTES.txt"]
    assert "pod-security.kubernetes.io/enforce=privileged" in notes and "no metrics endpoint" in notes
    assert "pod-security" not in RENDER.render_chart({"namespace": {"create": True}})["NOTES.txt"]


# --------------------------------------------------------------------------- what the agent gets


def container_environ(container: dict) -> dict[str, str]:
    """The literal variables of a container, $(NAME) expanded as the kubelet does, the
    downward API's node name filled in."""
    environ: dict[str, str] = {}
    for var in container["env"]:
        if "value" in var:
            value = var["value"]
            for name, known in environ.items():
                value = value.replace(f"$({name})", known)
            environ[var["name"]] = value
        elif var["valueFrom"].get("fieldRef", {}).get("fieldPath") == "spec.nodeName":
            environ[var["name"]] = NODE
    return environ


@pytest.mark.parametrize("name", ["defaults", "all-on"])
def test_config_map_is_read_by_the_agents_loader(name, tmp_path):
    """The ConfigMap's config.yaml, at the path the DaemonSet mounts it, read by the agent's own
    loader (safefs checks, unknown keys refused) with the container's variables."""
    docs = docs_of(RENDERINGS[name])
    (config_map,) = kind(docs, "ConfigMap")
    agent = agent_of(docs)
    (mount,) = [m for m in agent["volumeMounts"] if m["mountPath"] == "/etc/otel-exec/config.yaml"]
    (volume,) = [v for v in pod_of(docs)["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"] and mount["readOnly"]
    assert volume["configMap"]["defaultMode"] & 0o022 == 0
    text = config_map["data"][mount["subPath"]]
    assert yaml.safe_load(text) == RENDER.merge(DEFAULTS, RENDERINGS[name])["config"]
    path = tmp_path / "config.yaml"
    path.write_text(text)
    path.chmod(0o444)
    parser = cli.build_parser()
    args = parse_layered(parser, [*agent["command"][1:], "--config", str(path)], container_environ(agent))
    cfg = cli.config_from_args(args)
    cfg.validate()
    assert cfg.exporters == ("otlp",) and cfg.stats_interval == RENDERINGS[name].get("config", {}).get("stats_interval", 300)
    assert cfg.ready_file == "/run/otel-exec/ready"
    if name == "all-on":
        assert cfg.exclude_comm == ["pause"] and cfg.ringbuf_bytes == 8388608


def test_an_unknown_config_key_stops_the_agent(tmp_path):
    """What the schema refuses, the agent refuses too (exit code 2), so a config that slipped
    past the schema (kubectl edit) cannot be half-read."""
    from otel_exec.errors import UsageError

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"spooldir": "/x"}))
    with pytest.raises(UsageError, match="did you mean 'spool_dir'"):
        parse_layered(cli.build_parser(), ["run", "--config", str(path)], {})


def test_capabilities_not_privileged():
    docs = docs_of({})
    sc = agent_of(docs)["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) == {"BPF", "PERFMON", "SYS_RESOURCE", "SYS_PTRACE", "DAC_READ_SEARCH",
                                              "SYS_NICE", "SETPCAP"}
    assert pod_of(docs)["hostPID"] is True and pod_of(docs)["automountServiceAccountToken"] is False
    assert agent_of(docs_of(ALL_ON))["securityContext"]["privileged"] is True


def test_probes_and_the_ready_file():
    """The probes run `otel-exec health`; the agent writes its ready file where health looks,
    on a memory emptyDir (see test_memory_emptydir_is_accepted_for_the_ready_file)."""
    docs = docs_of({})
    agent = agent_of(docs)
    for probe in ("readinessProbe", "livenessProbe"):
        assert agent[probe]["exec"]["command"] == ["otel-exec", "health"]
    ready = Path(env_of(agent)["OTEL_EXEC_READY_FILE"]["value"])
    assert ready == Path("/run/otel-exec/ready")
    (mount,) = [m for m in agent["volumeMounts"] if Path(m["mountPath"]) == ready.parent]
    (volume,) = [v for v in pod_of(docs)["volumes"] if v["name"] == mount["name"]]
    assert volume["emptyDir"]["medium"] == "Memory"


@pytest.fixture
def tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    """A tmpfs mounted as the kubelet mounts a memory emptyDir: no mode option."""
    mount_point = tmp_path / "emptydir"
    mount_point.mkdir(mode=0o777)
    mount_point.chmod(0o777)  # the kubelet's setupDir, before it mounts the tmpfs over it
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], check=True)
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


@pytest.mark.kernel
def test_memory_emptydir_is_accepted_for_the_ready_file(tmpfs, tmp_path):
    """The ready file's directory passes the agent's checks (safefs, as --ready-file uses it) on a
    tmpfs root (mode 1777: sticky), and a disk emptyDir's 0777 directory does not."""
    assert os.stat(tmpfs).st_mode & 0o7777 == 0o1777
    dir_fd, name = safefs.split(str(tmpfs / "ready"))
    try:
        safefs.replace_file(dir_fd, name, b"ready\n", 0o644)
    finally:
        os.close(dir_fd)
    assert (tmpfs / "ready").read_bytes() == b"ready\n"
    disk = tmp_path / "disk-emptydir"
    disk.mkdir()
    disk.chmod(0o777)
    with pytest.raises(safefs.UnsafePath, match="writable by other users"):
        safefs.split(str(disk / "ready"))


@pytest.mark.kernel
@pytest.mark.needs_rotel
def test_agent_runs_with_the_charts_settings(collector, tmpfs, tmp_path):
    """The agent started as the DaemonSet starts it (the rendered ConfigMap as its config file,
    the container's variables), against the live kernel: it writes its ready file on a memory
    emptyDir's tmpfs and an exec on the host reaches the collector with the node as resource.
    Only what a pod has that this machine has not is replaced: the collector's address, the ready
    file's and the spool's place (on a node: /run/otel-exec, the hostPath at the default)."""
    kernel_problem = kernel_available()
    if kernel_problem:
        pytest.skip(kernel_problem)
    docs = docs_of({})
    agent = agent_of(docs)
    (config_map,) = kind(docs, "ConfigMap")
    config = tmp_path / "config.yaml"
    config.write_text(config_map["data"]["config.yaml"])
    environ = {**os.environ, **container_environ(agent),
               "OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint,
               "OTEL_EXEC_READY_FILE": str(tmpfs / "ready"),
               "OTEL_EXEC_SPOOL_DIR": str(tmp_path / "spool")}
    assert agent["command"] == ["otel-exec", "run"]
    err = tmp_path / "agent.stderr"
    with err.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "otel_exec", "run", "--config", str(config)],
                                cwd=chart.ROOT, env=environ, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=stderr)
    try:
        deadline = time.monotonic() + 60
        while not (tmpfs / "ready").exists():
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.05)
        marker = f"chart-{uuid.uuid4().hex}"
        subprocess.run(["/bin/echo", marker], check=True, stdout=subprocess.DEVNULL)
        (record,) = collector.wait_for_logs(
            lambda r: r.attributes.get(attributes.COMMAND_ARGS) == ["/bin/echo", marker], timeout=30)
        assert record.resource["k8s.node.name"] == NODE and record.resource["host.name"] == NODE
        assert record.resource["service.name"] == "otel-exec"
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    assert rc == 0, err.read_text()


def test_spool_on_a_host_path_at_the_agents_default():
    from otel_exec.cli import build_parser
    from otel_exec.config import subcommand

    docs = docs_of({"spool": {"hostPath": "/srv/otel-exec"}})
    (mount,) = [m for m in agent_of(docs)["volumeMounts"] if m["name"] == "spool"]
    (volume,) = [v for v in pod_of(docs)["volumes"] if v["name"] == "spool"]
    assert volume["hostPath"] == {"path": "/srv/otel-exec", "type": "DirectoryOrCreate"}
    default_spool = subcommand(build_parser(), "run").get_default("spool_dir")
    assert mount["mountPath"] == default_spool and not mount.get("readOnly")


def test_resource_attributes_are_the_nodes():
    agent = agent_of(docs_of(ALL_ON))
    environ = container_environ(agent)
    attributes = dict(kv.split("=", 1) for kv in environ["OTEL_RESOURCE_ATTRIBUTES"].split(","))
    assert attributes == {"k8s.node.name": NODE, "host.name": NODE, "k8s.cluster.name": "prod",
                          "deployment.environment.name": "production"}
    names = [e["name"] for e in agent["env"]]
    assert names.index("NODE_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")


def test_headers_only_in_a_secret():
    docs = docs_of(WITH_HEADERS)
    (secret,) = kind(docs, "Secret")
    headers = WITH_HEADERS["otlp"]["headers"]
    assert secret["stringData"] == {"OTEL_EXPORTER_OTLP_HEADERS": headers}
    ref = env_of(agent_of(docs))["OTEL_EXPORTER_OTLP_HEADERS"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": secret["metadata"]["name"], "key": "OTEL_EXPORTER_OTLP_HEADERS"}
    assert "s3cr3t" not in yaml.safe_dump([d for d in docs if d["kind"] != "Secret"])
    # A Secret of the user's: referenced, none rendered.
    docs = docs_of(WITH_EXISTING_SECRET)
    assert not kind(docs, "Secret")
    assert env_of(agent_of(docs))["OTEL_EXPORTER_OTLP_HEADERS"]["valueFrom"]["secretKeyRef"]["name"] == "my-otlp-headers"
    assert "OTEL_EXPORTER_OTLP_HEADERS" not in env_of(agent_of(docs_of({})))


def test_collector_sidecar():
    docs = docs_of(ALL_ON)
    pod = pod_of(docs)
    (sidecar,) = pod["initContainers"]
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar: stopped after the agent
    environ = container_environ(agent_of(docs))
    assert environ["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://localhost:4317"
    assert env_of(sidecar)["UPSTREAM_OTLP_ENDPOINT"]["value"] == DEFAULTS["otlp"]["endpoint"]
    (config_map,) = kind(docs, "ConfigMap")
    (mount,) = sidecar["volumeMounts"]
    collector = yaml.safe_load(config_map["data"][mount["subPath"]])
    assert sidecar["args"] == [f"--config={mount['mountPath']}"]
    receiver = collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert receiver.endswith(":4317")
    for signal in ("logs", "traces", "metrics"):
        pipeline = collector["service"]["pipelines"][signal]
        assert pipeline["receivers"] == ["otlp"] and pipeline["processors"][0] == "memory_limiter"
        for component_id in pipeline["exporters"]:
            assert collector["exporters"][component_id]["endpoint"] == "${env:UPSTREAM_OTLP_ENDPOINT}"
    assert sidecar["securityContext"]["runAsNonRoot"] and sidecar["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert "initContainers" not in pod_of(docs_of({}))


def test_no_metrics_port():
    """The agent pushes its metrics over OTLP and listens on nothing: no port, no Service."""
    docs = docs_of(ALL_ON)
    assert all("ports" not in c for c in pod_of(docs)["containers"] + pod_of(docs)["initContainers"])


def test_config_change_rolls_the_pods():
    def checksum(values):
        return pod_of_template(values)["metadata"]["annotations"]["checksum/config"]

    def pod_of_template(values):
        (ds,) = kind(docs_of(values), "DaemonSet")
        return ds["spec"]["template"]

    assert checksum({}) == checksum({"image": {"tag": "other"}})
    assert checksum({}) != checksum({"config": {"stats_interval": 60}})


# --------------------------------------------------------------------------- the renderer


def render_text(tmp_path: Path, templates: dict[str, str], values: dict | None = None) -> dict[str, str]:
    chart_dir = tmp_path / "c"
    (chart_dir / "templates").mkdir(parents=True)
    (chart_dir / "Chart.yaml").write_text("name: c\nversion: 1.0.0\nappVersion: '2'\n")
    (chart_dir / "values.yaml").write_text(yaml.safe_dump(values or {}))
    for name, text in templates.items():
        (chart_dir / "templates" / name).write_text(text)
    return RENDER.render_chart(chart_dir=chart_dir, release="r", namespace="ns")


def test_renderer_subset(tmp_path):
    out = render_text(tmp_path, {
        "_h.tpl": '{{- define "n" -}}{{ .Release.Name }}-{{ .Chart.Name }}{{- end -}}',
        "t.yaml": (
            "a: {{ include \"n\" . }}\n"
            "b: {{ .Values.missing | default \"d\" | quote }}\n"
            "{{- with .Values.m }}\n"
            "m:\n  {{- toYaml . | nindent 2 }}\n"
            "{{- else }}\nnone: true\n{{- end }}\n"
            "{{- if and .Values.x (not .Values.y) }}\nx: {{ $.Chart.AppVersion }}\n{{- else if .Values.y }}\ny: 1\n{{- end }}\n"
            "n: {{ toYaml 5 }}\n"
            "{{/* a comment */}}"
        ),
    }, {"m": {"k": "v"}, "x": True})
    assert out["t.yaml"] == 'a: r-c\nb: "d"\nm:\n  k: v\nx: 2\nn: 5\n'


@pytest.mark.parametrize("template", ["{{ lower .Values.a }}", "{{ $x := 1 }}", "{{ if .Values.a }}", "{{ .Values.m }}",
                                      "{{ range .Values.m }}{{ end }}", "{{ end }}"])
def test_renderer_refuses_what_it_does_not_know(tmp_path, template):
    """Outside the subset is an error, never a silent wrong rendering."""
    with pytest.raises(RENDER.TemplateError):
        render_text(tmp_path, {"t.yaml": template}, {"a": "x", "m": {"k": 1}})


def test_renderer_values_merge_as_helm():
    merged = RENDER.merge({"a": {"b": 1, "c": [1, 2]}, "d": 1}, {"a": {"c": [3]}, "e": 2})
    assert merged == {"a": {"b": 1, "c": [3]}, "d": 1, "e": 2}
    assert copy.deepcopy(DEFAULTS) == RENDER.chart_values()  # rendering does not change the defaults
