"""The Helm chart deploy/helm/otel-exec as the tests see it: its renderer (deploy/helm/render.py,
a standalone script, loaded by path), its values schema, and the part of that schema that
otel-exec's own settings decide (the `config` keys).

When an option of `otel-exec run` is added or changed, regenerate the schema's config keys:
    .venv/bin/python -m tests.helpers.chart > /tmp/config-properties.json
and put them under properties.config.properties in deploy/helm/otel-exec/values.schema.json.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "deploy" / "helm" / "otel-exec"
RENDERER = ROOT / "deploy" / "helm" / "render.py"
PLAIN_MANIFEST = ROOT / "deploy" / "kubernetes" / "otel-exec.yaml"
SCHEMA = CHART_DIR / "values.schema.json"

# Config-file keys the chart sets elsewhere, which values.schema.json refuses under `config`:
# the OTLP headers are secret (otlp.headers, a Secret); the ready file is where the probes look
# (an emptyDir, OTEL_EXEC_READY_FILE); the spool directory is the hostPath mount (spool.hostPath).
KEYS_SET_ELSEWHERE = {"header": "otlp.headers", "ready_file": "probes", "spool_dir": "spool.hostPath"}


def renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("otel_exec_chart_render", RENDERER)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def schema() -> dict:
    return json.loads(SCHEMA.read_text())


def config_properties() -> dict[str, dict]:
    """The JSON schema of each configuration-file key, as otel_exec.config.from_file takes it."""
    from otel_exec import cli
    from otel_exec.config import csv, file_key, is_repeatable, is_switch, settings, subcommand

    out: dict[str, dict] = {}
    for action in settings(subcommand(cli.build_parser(), "run")):
        key = file_key(action)
        if key in KEYS_SET_ELSEWHERE:
            continue
        scalar: dict = {"type": ["string", "number"]}
        if action.choices is not None:
            scalar = {"enum": sorted(action.choices)}
        if is_switch(action):
            prop: dict = {"type": "boolean"}
        elif is_repeatable(action) or action.type is csv:
            prop = {"anyOf": [scalar, {"type": "array", "items": scalar}]}
        else:
            prop = scalar
        out[key] = {**prop, "description": f"{action.option_strings[-1]} (docs/configuration.md)"}
    return out


if __name__ == "__main__":
    json.dump(config_properties(), sys.stdout, indent=2)
    print()
