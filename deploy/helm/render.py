#!/usr/bin/env python3
"""Render the otel-exec Helm chart without Helm, for the subset of Go templates the chart uses.

This is not Helm. It exists because no Helm binary can be installed where the tests run; it
renders deploy/helm/otel-exec/ so that

  * deploy/kubernetes/otel-exec.yaml (the plain manifest) is generated from the chart:
        python3 deploy/helm/render.py --plain > deploy/kubernetes/otel-exec.yaml
    and a test fails when the committed file differs from a fresh rendering;
  * the tests validate renderings (defaults and other values) against the Kubernetes schemas.

The subset, and nothing more (anything else is an error, never silently rendered):
  actions      {{ pipeline }}, {{- and -}} trim markers, {{/* comments */}},
               if / else if / else / end, with / else / end, define / end
  operands     .  $  .Field.Chain  $.Field.Chain  "strings"  integers  true false nil  ( pipeline )
  functions    include default quote toYaml nindent trunc trimSuffix sha256sum and or not
  pipelines    a | f b  calls f b a (the piped value is the last argument)
The template data is Helm's: .Values, .Release (Name, Namespace, Service), .Chart (Name,
Version, AppVersion, ...), .Template (Name). Values are merged as Helm merges a -f file
(maps recursively, everything else replaced). Unlike Helm, numbers stay Python ints and floats
(Helm reads values as float64: printing a large integer directly gives 1e+06 there, so the
chart passes numbers through toYaml only), and toYaml is PyYAML's: the same data as Helm's
go-yaml output, not always the same text (quoting, and so the checksum/config annotations).

Python 3.10+ and PyYAML.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

CHART_DIR = Path(__file__).resolve().parent / "otel-exec"
# The plain manifest is this rendering: release otel-exec in namespace otel-exec, which the
# manifest creates with its Pod Security labels (helm install cannot label a namespace it creates).
PLAIN_RELEASE = "otel-exec"
PLAIN_NAMESPACE = "otel-exec"
PLAIN_VALUES: dict[str, Any] = {"namespace": {"create": True}}
PLAIN_HEADER = """\
# GENERATED from the Helm chart deploy/helm/otel-exec (default values, release and namespace
# otel-exec, namespace.create=true) by deploy/helm/render.py. Do not edit: change the chart and run
#   python3 deploy/helm/render.py --plain > deploy/kubernetes/otel-exec.yaml
# (tests/deploy/test_chart.py fails when this file and the chart differ).
#
#   kubectl apply -f deploy/kubernetes/otel-exec.yaml
#
# Set the image (there is no published one yet: build it from the repository's Dockerfile) and the
# collector endpoint (OTEL_EXPORTER_OTLP_ENDPOINT) before applying. What each setting is for:
# deploy/helm/otel-exec/values.yaml and deploy/helm/otel-exec/README.md.
"""


class TemplateError(Exception):
    pass


# --------------------------------------------------------------------------- lexing

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<number>-?\d+)
  | (?P<field>(?:\$|\.)?(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\$|\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[|()])
""", re.VERBOSE)


@dataclass
class Text:
    text: str


@dataclass
class Action:
    tokens: list[tuple[str, str]]


@dataclass
class Block:
    kind: str  # if, with, define
    branches: list[tuple[list[tuple[str, str]] | None, list]] = field(default_factory=list)
    name: str = ""


def _lex(expr: str, where: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise TemplateError(f"{where}: cannot read {expr[pos:pos + 20]!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            tokens.append((m.lastgroup, m.group()))
    return tokens


def _split(source: str, where: str) -> list[Text | Action]:
    """Text and actions, with the trim markers applied to the text around them."""
    parts: list[Text | Action] = []
    pos, trim_next = 0, False
    for m in _ACTION.finditer(source):
        text = source[pos:m.start()]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if m.group(1):
            text = text.rstrip(" \t\r\n")
        parts.append(Text(text))
        body = m.group(2).strip()
        if not (body.startswith("/*") and body.endswith("*/")):
            parts.append(Action(_lex(body, where)))
        pos, trim_next = m.end(), bool(m.group(3))
    text = source[pos:]
    parts.append(Text(text.lstrip(" \t\r\n") if trim_next else text))
    if "{{" in "".join(p.text for p in parts if isinstance(p, Text)):
        raise TemplateError(f"{where}: an action this renderer cannot read")
    return parts


def _parse(parts: list[Text | Action], where: str) -> tuple[list, dict[str, list]]:
    """The node tree, and the templates it defines."""
    defines: dict[str, list] = {}
    root: list = []
    stack: list[tuple[Block, list]] = []
    body = root
    for part in parts:
        if isinstance(part, Text):
            if part.text:
                body.append(part)
            continue
        head = part.tokens[0][1] if part.tokens else ""
        rest = part.tokens[1:]
        if head in ("if", "with"):
            block = Block(head)
            block.branches.append((rest, []))
            body.append(block)
            stack.append((block, body))
            body = block.branches[-1][1]
        elif head == "define":
            if not rest or rest[0][0] != "string":
                raise TemplateError(f"{where}: define needs a name")
            block = Block("define", name=json.loads(rest[0][1]))
            block.branches.append((None, []))
            stack.append((block, body))
            body = block.branches[-1][1]
        elif head == "else":
            if not stack:
                raise TemplateError(f"{where}: else outside a block")
            block = stack[-1][0]
            if rest and rest[0][1] == "if" and block.kind == "if":
                block.branches.append((rest[1:], []))
            elif not rest:
                block.branches.append((None, []))
            else:
                raise TemplateError(f"{where}: unsupported else form")
            body = block.branches[-1][1]
        elif head == "end":
            if not stack:
                raise TemplateError(f"{where}: end without a block")
            block, body = stack.pop()
            if block.kind == "define":
                defines[block.name] = block.branches[0][1]
        else:
            body.append(part)
    if stack:
        raise TemplateError(f"{where}: {stack[-1][0].kind} without end")
    return root, defines


# --------------------------------------------------------------------------- evaluation


def _truth(value: Any) -> bool:
    return value not in (None, False, 0, "") and not (isinstance(value, (list, dict)) and not value)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        raise TemplateError("printing a map or list directly: use toYaml")
    return str(value)


def _to_yaml(value: Any) -> str:
    if value is None:
        return "null"
    text = yaml.safe_dump(value, default_flow_style=False, sort_keys=True, width=1 << 16)
    # A scalar comes with PyYAML's document end marker, which go-yaml does not write.
    return text.removesuffix("\n...\n").rstrip("\n")


def _indent(n: int, text: str) -> str:
    pad = " " * n
    return pad + str(text).replace("\n", "\n" + pad)


class Renderer:
    def __init__(self, defines: dict[str, list]):
        self.defines = defines
        self._root: Any = None  # what `$` is in the template being rendered
        self.functions: dict[str, Callable[..., Any]] = {
            "include": self._include,
            "default": lambda fallback, value=None: value if _truth(value) else fallback,
            "quote": lambda value: json.dumps(_text(value), ensure_ascii=False),
            "toYaml": _to_yaml,
            "nindent": lambda n, text: "\n" + _indent(n, text),
            "trunc": lambda n, text: str(text)[:n],
            "trimSuffix": lambda suffix, text: str(text)[: -len(suffix)] if suffix and str(text).endswith(suffix) else str(text),
            "and": lambda *args: next((a for a in args if not _truth(a)), args[-1]),
            "or": lambda *args: next((a for a in args if _truth(a)), args[-1]),
            "not": lambda value: not _truth(value),
            "sha256sum": lambda text: hashlib.sha256(str(text).encode()).hexdigest(),
        }

    def _include(self, name: str, dot: Any) -> str:
        if name not in self.defines:
            raise TemplateError(f"include of undefined template {name!r}")
        # Inside the included template both `.` and `$` are the argument, as in Go.
        return self.render(self.defines[name], dot, dot)

    def render(self, nodes: list, dot: Any, root: Any) -> str:
        saved, self._root = self._root, root
        try:
            return "".join(self._node(n, dot) for n in nodes)
        finally:
            self._root = saved

    def _node(self, node: Any, dot: Any) -> str:
        if isinstance(node, Text):
            return node.text
        if isinstance(node, Action):
            return _text(self._pipeline(node.tokens, dot))
        for condition, body in node.branches:
            if condition is None:
                return self.render(body, dot, self._root)
            value = self._pipeline(condition, dot)
            if not _truth(value):
                continue
            return self.render(body, value if node.kind == "with" else dot, self._root)
        return ""

    def _pipeline(self, tokens: list[tuple[str, str]], dot: Any) -> Any:
        commands: list[list[tuple[str, str]]] = [[]]
        depth = 0
        for token in tokens:
            if token == ("punct", "|") and depth == 0:
                commands.append([])
                continue
            depth += {"(": 1, ")": -1}.get(token[1], 0) if token[0] == "punct" else 0
            commands[-1].append(token)
        value: Any = _NOTHING
        for command in commands:
            value = self._command(command, dot, value)
        return value

    def _command(self, tokens: list[tuple[str, str]], dot: Any, piped: Any) -> Any:
        operands = self._operands(tokens, dot)
        if not operands:
            raise TemplateError("empty command")
        head, args = operands[0], operands[1:]
        if isinstance(head, _Function):
            if piped is not _NOTHING:
                args.append(piped)
            return self.functions[head.name](*args)
        if args or piped is not _NOTHING:
            raise TemplateError("arguments to a value that is not a function")
        return head

    def _operands(self, tokens: list[tuple[str, str]], dot: Any) -> list[Any]:
        out: list[Any] = []
        i = 0
        while i < len(tokens):
            kind, text = tokens[i]
            if kind == "punct" and text == "(":
                depth, j = 1, i + 1
                while depth:
                    if j >= len(tokens):
                        raise TemplateError("unbalanced parentheses")
                    depth += {"(": 1, ")": -1}.get(tokens[j][1], 0) if tokens[j][0] == "punct" else 0
                    j += 1
                out.append(self._pipeline(tokens[i + 1:j - 1], dot))
                i = j
                continue
            if kind == "string":
                out.append(json.loads(text))
            elif kind == "number":
                out.append(int(text))
            elif kind == "field":
                out.append(self._field(text, dot))
            elif kind == "ident" and text in ("true", "false", "nil"):
                out.append({"true": True, "false": False, "nil": None}[text])
            elif kind == "ident" and text in self.functions:
                out.append(_Function(text))
            else:
                raise TemplateError(f"unsupported: {text!r}")
            i += 1
        return out

    def _field(self, chain: str, dot: Any) -> Any:
        value = self._root if chain.startswith("$") else dot
        for name in chain.lstrip("$").split(".")[1:] if chain not in (".", "$") else []:
            if value is None:
                return None
            if not isinstance(value, dict):
                raise TemplateError(f"{chain}: .{name} of a {type(value).__name__}")
            value = value.get(name)
        return value


@dataclass(frozen=True)
class _Function:
    name: str


_NOTHING = object()


# --------------------------------------------------------------------------- the chart


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of a values file over the chart's values.yaml."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def chart_values(chart_dir: Path = CHART_DIR) -> dict[str, Any]:
    return yaml.safe_load((chart_dir / "values.yaml").read_text()) or {}


def render_chart(values: dict[str, Any] | None = None, *, release: str = PLAIN_RELEASE,
                 namespace: str = PLAIN_NAMESPACE, chart_dir: Path = CHART_DIR) -> dict[str, str]:
    """Each template's output (by file name under templates/) for `values` over the defaults;
    helpers (_*.tpl) define templates and render nothing."""
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    data = {
        "Values": merge(chart_values(chart_dir), values or {}),
        "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
        "Chart": {"Name": chart["name"], "Version": chart["version"], "AppVersion": chart.get("appVersion", "")},
    }
    templates = sorted((chart_dir / "templates").iterdir())
    defines: dict[str, list] = {}
    trees: dict[str, list] = {}
    for path in templates:
        tree, found = _parse(_split(path.read_text(), path.name), path.name)
        defines.update(found)
        trees[path.name] = tree
    renderer = Renderer(defines)
    out = {}
    for name, tree in trees.items():
        if name.startswith("_"):
            continue
        data["Template"] = {"Name": f"{chart['name']}/templates/{name}"}
        out[name] = renderer.render(tree, data, data)
    return out


# Helm's install order (pkg/releaseutil/kind_sorter.go), for the kinds this chart renders: a
# Namespace before what goes in it, a ConfigMap before the pods that mount it.
INSTALL_ORDER = ("Namespace", "ServiceAccount", "Secret", "ConfigMap", "DaemonSet")


def manifest(values: dict[str, Any] | None = None, **kwargs: Any) -> str:
    """The YAML documents of a rendering in Helm's install order, as `helm template` prints them
    (NOTES.txt left out)."""
    docs = []
    for name, text in render_chart(values, **kwargs).items():
        if name == "NOTES.txt":
            continue
        for doc in re.split(r"^---\s*$", text, flags=re.MULTILINE):
            parsed = yaml.safe_load(doc)
            if parsed is None:
                continue
            if parsed.get("kind") not in INSTALL_ORDER:
                raise TemplateError(f"{name}: kind {parsed.get('kind')} is not in INSTALL_ORDER")
            order = (INSTALL_ORDER.index(parsed["kind"]), parsed["metadata"]["name"])
            docs.append((order, f"---\n# Source: otel-exec/templates/{name}\n{doc.strip(chr(10))}\n"))
    return "".join(text for _, text in sorted(docs))


def plain_manifest() -> str:
    return PLAIN_HEADER + manifest(PLAIN_VALUES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plain", action="store_true", help="the plain manifest deploy/kubernetes/otel-exec.yaml")
    parser.add_argument("-f", "--values", type=Path, action="append", default=[], help="a values file (repeatable)")
    parser.add_argument("--release", default=PLAIN_RELEASE)
    parser.add_argument("--namespace", default=PLAIN_NAMESPACE)
    parser.add_argument("--notes", action="store_true", help="print NOTES.txt instead")
    args = parser.parse_args(argv)
    if args.plain:
        sys.stdout.write(plain_manifest())
        return 0
    values: dict[str, Any] = {}
    for path in args.values:
        values = merge(values, yaml.safe_load(path.read_text()) or {})
    if args.notes:
        sys.stdout.write(render_chart(values, release=args.release, namespace=args.namespace)["NOTES.txt"])
    else:
        sys.stdout.write(manifest(values, release=args.release, namespace=args.namespace))
    return 0


if __name__ == "__main__":
    sys.exit(main())
