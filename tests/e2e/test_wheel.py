"""The wheel scripts/wheel builds (docs/packaging.md): built from the sdist,
reproducible, tagged for a package index, carrying the CO-RE object; installed
into a fresh venv on a PATH with no compiler, clang, make or bpftool, it runs
against the live kernel, reports execs, says what it would use
(`--version`, also as an unprivileged user) and installs its systemd unit."""
from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.helpers.agent_run import ROOT, AgentRun, kernel_available, marked, marked_env, new_mark

# The distribution's interpreter: a venv of it is usable by every user (the
# --version test runs as nobody), unlike one under /root.
SYSTEM_PYTHON = "/usr/bin/python3"
BUILD_TOOLS = ("cc", "gcc", "clang", "make", "bpftool", "ld", "llc")
NOBODY = 65534


@dataclass
class Built:
    wheel: Path
    sdist: Path
    sha256: str


def build(out: Path, source: Path = ROOT, **env: str) -> Built:
    """scripts/wheel of `source` into `out`, for the interpreter the wheel is installed with."""
    done = subprocess.run([str(source / "scripts" / "wheel"), str(out)], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "OTEL_EXEC_PYTHON": SYSTEM_PYTHON, **env})
    assert done.returncode == 0, done.stderr[-4000:]
    lines = dict((name, rest.split()) for name, rest in (l.split(" ", 1) for l in done.stdout.splitlines()))
    (wheel,) = [n for n in lines if n.endswith(".whl")]
    (sdist,) = [n for n in lines if n.endswith(".tar.gz")]
    assert int(lines[wheel][0]) == (out / wheel).stat().st_size
    return Built(out / wheel, out / sdist, lines[wheel][1])


def has_extensions(wheel: Path) -> bool:
    return any(n.endswith(".so") for n in zipfile.ZipFile(wheel).namelist())


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build(tmp_path_factory.mktemp("wheel"))


def test_wheel_tag_is_one_a_package_index_takes(built: Built) -> None:
    arch = os.uname().machine
    tags = built.wheel.name.removesuffix(".whl").split("-", 2)[2]
    if has_extensions(built.wheel):  # auditwheel's tag for C extensions of this CPython
        assert re.fullmatch(rf"(cp3\d+)-\1-(manylinux[0-9_]*_{arch}\.?)+", tags), tags
    else:  # nothing linked: the oldest manylinux baseline (setup.py)
        assert tags == f"py3-none-manylinux_2_17_{arch}"


def test_wheel_carries_the_object_and_the_systemd_files_not_the_build_inputs(built: Built) -> None:
    names = zipfile.ZipFile(built.wheel).namelist()
    for name in ("otel_exec/_bpf/otel_exec.bpf.o", "otel_exec/_bpf/otel_exec_bcc.c", "otel_exec/_bpf/otel_exec_bcc.h",
                 "otel_exec/_systemd/otel-exec.service", "otel_exec/_systemd/config.yaml"):
        assert name in names
    assert not [n for n in names if n.endswith("vmlinux.h") or n.startswith(("bpf/", "tests/"))]
    with zipfile.ZipFile(built.wheel) as z:
        assert z.read("otel_exec/_bpf/otel_exec.bpf.o")[:4] == b"\x7fELF"


def test_sdist_carries_sources_not_built_objects(built: Built) -> None:
    """The wheel above was built from this sdist (scripts/wheel), so the sdist
    builds the object from source."""
    with tarfile.open(built.sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    assert {"bpf/Makefile", "bpf/otel_exec.bpf.c", "bpf/otel_exec.h", "setup.py", "pyproject.toml",
            "otel_exec/_systemd/otel-exec.service"} <= names
    assert not [n for n in names if n.endswith((".o", ".so", "vmlinux.h"))]


def test_wheel_build_is_reproducible(built: Built, tmp_path: Path) -> None:
    again = build(tmp_path)
    assert again.wheel.name == built.wheel.name
    assert again.sha256 == built.sha256


def test_wheel_with_c_extensions_gets_auditwheels_manylinux_tag(tmp_path: Path) -> None:
    """setup.py's ext_modules path: a scratch copy of the tree with a
    throwaway extension added builds a cpXY-cpXY wheel that auditwheel repaired
    to a manylinux tag, with the object and the extension in it."""
    scratch = tmp_path / "src"
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file() and not name.startswith(".venv"):
            (scratch / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, scratch / name)
    (scratch / "otel_exec" / "_scratch_native.c").write_text(
        "#include <Python.h>\n"
        'static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_scratch_native", NULL, -1, NULL};\n'
        "PyMODINIT_FUNC PyInit__scratch_native(void) { return PyModule_Create(&mod); }\n")
    with open(scratch / "MANIFEST.in", "a") as f:
        f.write("include otel_exec/_scratch_native.c\n")
    setup = (scratch / "setup.py").read_text()
    at = setup.rindex("\nsetup(")
    call = setup[at + 1:].strip()
    assert call.endswith(")"), "setup.py ends with its setup(...) call"
    (scratch / "setup.py").write_text(
        setup[:at] + "\n\ndef _with_scratch_extension(kw):\n"
        "    from setuptools import Extension\n"
        '    ext = Extension("otel_exec._scratch_native", ["otel_exec/_scratch_native.c"])\n'
        '    return {**kw, "ext_modules": [*(kw.get("ext_modules") or []), ext]}\n\n\n'
        f"setup(**_with_scratch_extension(dict({call[len('setup('):-1]})))\n")
    built = build(tmp_path / "out", scratch, SOURCE_DATE_EPOCH="1700000000")
    assert re.fullmatch(rf"otel_exec-[^-]+-(cp3\d+)-\1-(manylinux[0-9_]*_{os.uname().machine}\.?)+\.whl",
                        built.wheel.name), built.wheel.name
    names = zipfile.ZipFile(built.wheel).namelist()
    assert "otel_exec/_bpf/otel_exec.bpf.o" in names
    assert [n for n in names if re.fullmatch(r"otel_exec/_scratch_native\.cpython-.*\.so", n)]


# --------------------------------------------------------------------------- installed


@dataclass
class Installed:
    venv: Path
    bare_path: str  # a PATH with none of BUILD_TOOLS

    @property
    def command(self) -> str:
        return str(self.venv / "bin" / "otel-exec")

    def env(self) -> dict[str, str]:
        return {"PATH": self.bare_path, "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}


@pytest.fixture(scope="module")
def installed(built: Built) -> Iterator[Installed]:
    """The wheel in a fresh venv, installed with binary packages only on a
    PATH of one empty directory: nothing can be compiled."""
    top = Path(tempfile.mkdtemp(prefix="otel-exec-wheel-"))
    try:
        top.chmod(0o755)
        bare = top / "bin"
        bare.mkdir()
        for tool in BUILD_TOOLS:
            assert shutil.which(tool, path=str(bare)) is None
        venv = top / "venv"
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True, timeout=300)
        inst = Installed(venv, str(bare))
        done = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                               "--only-binary", ":all:", str(built.wheel)],
                              capture_output=True, text=True, timeout=900, env=inst.env(), cwd=top)
        assert done.returncode == 0, done.stderr[-4000:]
        yield inst
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_installed_package_is_the_wheels(installed: Installed) -> None:
    where = subprocess.run([str(installed.venv / "bin" / "python"), "-c",
                            "import otel_exec, sys; print(otel_exec.__file__)"],
                           capture_output=True, text=True, check=True, env=installed.env(), cwd=installed.venv)
    assert where.stdout.startswith(str(installed.venv / "lib")), where.stdout


def _version(installed: Installed, **kw: object) -> list[str]:
    done = subprocess.run([installed.command, "--version"], capture_output=True, text=True, timeout=120,
                          env=installed.env(), cwd="/", **kw)  # type: ignore[call-overload]
    assert done.returncode == 0 and not done.stderr, done.stderr
    return done.stdout.splitlines()


@pytest.mark.kernel
def test_version_names_the_backend_the_features_and_why(installed: Installed) -> None:
    from otel_exec import __version__

    if kernel_available():
        pytest.skip(kernel_available())
    lines = _version(installed)
    assert lines[0] == f"otel-exec {__version__}"
    assert "backend: core (BTF at /sys/kernel/btf/vmlinux)" in lines
    assert "btf: /sys/kernel/btf/vmlinux readable" in lines
    assert "ring buffer and tp_btf: BPF ring buffer and tp_btf exec/exit tracepoints offered" in lines
    assert [l for l in lines if l.startswith("sched_prepare_exec: ")]
    assert [l for l in lines if re.fullmatch(r"libbpf: 1\.\d+ \(the system's libbpf\.so\.1\)", l)]
    assert [l for l in lines if l.startswith(f"co-re object: {installed.venv}/lib/python")
            and l.endswith("/site-packages/otel_exec/_bpf/otel_exec.bpf.o")], lines


@pytest.mark.kernel
def test_version_as_an_unprivileged_user_loads_nothing_and_says_the_same(installed: Installed) -> None:
    if kernel_available():
        pytest.skip(kernel_available())
    as_root = _version(installed)
    as_nobody = _version(installed, user=NOBODY, group=NOBODY, extra_groups=[])
    assert as_nobody == as_root


@pytest.mark.kernel
def test_installed_wheel_runs_against_the_kernel_without_build_tools(installed: Installed, tmp_path: Path) -> None:
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    work = tmp_path / "run"
    run = AgentRun(work, "--no-spool", "--exporter", "console", command=[installed.command], env=installed.env(),
                   cwd=installed.venv)
    mark = new_mark()
    for argv in (["/bin/echo", "wheel"], ["/bin/sh", "-c", "/bin/true; exit 3"], ["/usr/bin/env", "true"]):
        subprocess.run(argv, env=marked_env(mark), stdout=subprocess.DEVNULL)
    expected = sorted([(os.path.realpath("/bin/echo"), ["/bin/echo", "wheel"]),
                       (os.path.realpath("/bin/sh"), ["/bin/sh", "-c", "/bin/true; exit 3"]),
                       (os.path.realpath("/bin/true"), ["/bin/true"]),
                       (os.path.realpath("/usr/bin/env"), ["/usr/bin/env", "true"]),
                       (os.path.realpath("/usr/bin/true"), ["true"])])
    hits = run.find(marked(mark), count=len(expected), timeout=20)
    rc, err = run.stop(signal.SIGINT)
    assert rc == 0, err
    assert sorted((e["pathname"], e["argv"]) for e in hits) == expected, err


def test_install_systemd_from_the_wheel_writes_a_unit_systemd_accepts(installed: Installed, tmp_path: Path) -> None:
    """The installed command's install-systemd into a scratch root: the unit
    starts the venv's otel-exec and passes `systemd-analyze verify`."""
    if os.geteuid() != 0:
        pytest.skip("install-systemd needs root")
    root = tmp_path / "root"
    done = subprocess.run([installed.command, "install-systemd", "--root", str(root)], capture_output=True,
                          text=True, timeout=60, env=installed.env())
    assert done.returncode == 0, done.stderr
    unit = root / "etc/systemd/system/otel-exec.service"
    assert f"ExecStart={installed.command} run --exporter otlp\n" in unit.read_text()
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
