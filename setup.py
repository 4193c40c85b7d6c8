"""Build step that compiles the CO-RE BPF object into the package.

Everything else about the package is in pyproject.toml. ``build_py`` runs
``make -C bpf OUTPUT=<dir>``, where <dir> is otel_exec/_bpf inside the build
tree (a wheel) or inside the source tree (an editable install), so the object
ships as package data: otel_exec/_bpf/otel_exec.bpf.o. The object is never
committed. Building needs clang, bpftool, make and libbpf's headers, and the
build machine's BTF (/sys/kernel/btf/vmlinux, or VMLINUX_BTF) for vmlinux.h;
CLANG, BPFTOOL and VMLINUX_BTF in the environment are passed on to make.

``build_ext`` compiles the optional C extensions of the per-exec hot path
(NATIVE_EXTENSIONS; gcc and the Python headers). Each has a pure-Python
reference next to it: when one does not compile, the build says so once and
goes on, and the reference runs (otel_exec/native.py).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Distribution, Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(globals().get("__file__") or os.getcwd()).resolve().parent
BPF_SRC = ROOT / "bpf"
OBJECT = "otel_exec.bpf.o"
APT_PACKAGES = "clang llvm libbpf-dev bpftool make"


def _fail(problem: str) -> None:
    raise SystemExit(
        "\n"
        f"error: otel-exec: cannot build the BPF object otel_exec/_bpf/{OBJECT}:\n"
        f"  {problem}\n"
        f"  On Debian/Ubuntu: sudo apt-get install {APT_PACKAGES}\n"
        "  (on Ubuntu, bpftool comes with linux-tools-common and\n"
        "  linux-tools-$(uname -r)). scripts/otel-exec-dev installs all of it.\n"
    )


def _bpftool() -> str | None:
    for cand in (os.environ.get("BPFTOOL"), shutil.which("bpftool"),
                 "/usr/sbin/bpftool"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def _check_tools(out: Path) -> None:
    missing = []
    clang = os.environ.get("CLANG", "clang")
    if not shutil.which(clang):
        missing.append(clang)
    if not shutil.which("make"):
        missing.append("make")
    bpftool = _bpftool()
    if bpftool is None:
        missing.append("bpftool")
    if not Path("/usr/include/bpf/bpf_helpers.h").exists():
        missing.append("libbpf headers (/usr/include/bpf/bpf_helpers.h)")
    if missing:
        _fail("missing: " + ", ".join(missing))
    if not (out / "vmlinux.h").exists():
        try:
            ok = subprocess.run([bpftool, "version"], capture_output=True,
                                timeout=60).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if not ok:
            _fail(f"{bpftool} is installed but does not run "
                  "(on Ubuntu: install linux-tools-$(uname -r), or set "
                  "BPFTOOL=/usr/lib/linux-tools/<version>/bpftool)")
        btf = os.environ.get("VMLINUX_BTF", "/sys/kernel/btf/vmlinux")
        if not Path(btf).exists():
            raise SystemExit(
                f"\nerror: otel-exec: cannot generate vmlinux.h: {btf} does "
                "not exist.\n  The build needs a kernel with BTF "
                "(CONFIG_DEBUG_INFO_BTF=y), or VMLINUX_BTF=<file with BTF>.\n"
            )


def build_bpf(out: Path) -> None:
    """Compile bpf/ into out/ (incremental: make decides what is stale)."""
    out = out.resolve()
    _check_tools(out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = ["make", "--no-print-directory", "-C", str(BPF_SRC),
           f"OUTPUT={out}"]
    print("otel-exec: " + " ".join(cmd), file=sys.stderr, flush=True)
    rc = subprocess.run(cmd).returncode
    if rc != 0:
        raise SystemExit(
            f"\nerror: otel-exec: `{' '.join(cmd)}` failed (exit {rc}); "
            "the compiler's output is above.\n"
        )
    if not (out / OBJECT).exists():
        raise SystemExit(f"\nerror: otel-exec: make did not produce {out / OBJECT}\n")


class BuildPyWithBpf(build_py):
    def run(self):
        if getattr(self, "editable_mode", False):
            # Editable install: the package is imported from the source
            # tree, so the object goes there (ignored by git).
            build_bpf(ROOT / "otel_exec" / "_bpf")
            super().run()
            return
        super().run()
        out = Path(self.build_lib) / "otel_exec" / "_bpf"
        # Always a fresh object in a wheel, never one copied from the source
        # tree; and no vmlinux.h (machine-specific, megabytes) in the wheel.
        (out / OBJECT).unlink(missing_ok=True)
        build_bpf(out)
        (out / "vmlinux.h").unlink(missing_ok=True)

    def get_outputs(self, include_bytecode=1):
        outputs = list(super().get_outputs(include_bytecode))
        if not getattr(self, "editable_mode", False):
            obj = os.path.join(self.build_lib, "otel_exec", "_bpf", OBJECT)
            if obj not in outputs:
                outputs.append(obj)
        return outputs


# No debug information and no build directory in the objects: a wheel built
# twice from one source, wherever it was unpacked, is the same bytes.
NATIVE_CFLAGS = ["-O2", "-std=gnu11", "-g0", f"-ffile-prefix-map={ROOT}=."]
NATIVE_EXTENSIONS = [
    Extension("otel_exec.core._decode_native", ["otel_exec/core/_decode_native.c"], extra_compile_args=NATIVE_CFLAGS),
    Extension("otel_exec.export.otlp._encode_native", ["otel_exec/export/otlp/_encode_native.c"],
              extra_compile_args=NATIVE_CFLAGS),
    Extension("otel_exec.export._spool_native", ["otel_exec/export/_spool_native.c"], extra_compile_args=NATIVE_CFLAGS),
    Extension("otel_exec.lineage._lineage_native", ["otel_exec/lineage/_lineage_native.c"],
              extra_compile_args=NATIVE_CFLAGS),
]


class BuildOptionalExt(build_ext):
    """Builds each of NATIVE_EXTENSIONS if it can, and says which it built:
    a missing compiler or header leaves the Python reference in its place."""

    def initialize_options(self):
        super().initialize_options()
        self.not_built = set()

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler at all: distutils raises before any extension
            self.not_built.update(ext.name for ext in self.extensions)
            self._say(f"no C extension built ({exc}); the pure-Python hot path runs")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self.not_built.add(ext.name)
            self._say(f"C extension {ext.name} NOT built ({type(exc).__name__}: {exc}); "
                      "its pure-Python reference runs")
            return
        self._say(f"C extension {ext.name} built")

    def _built(self):
        return [ext for ext in self.extensions if ext.name not in self.not_built]

    @contextlib.contextmanager
    def _only_built(self):
        extensions, self.extensions = self.extensions, self._built()
        try:
            yield
        finally:
            self.extensions = extensions

    # What an install, a wheel or an in-place build copies: the extensions built.
    def copy_extensions_to_source(self):
        with self._only_built():
            super().copy_extensions_to_source()

    def get_outputs(self):
        with self._only_built():
            return super().get_outputs()

    def get_output_mapping(self):
        with self._only_built():
            return super().get_output_mapping()

    @staticmethod
    def _say(message: str) -> None:
        print(f"otel-exec: {message}", file=sys.stderr, flush=True)


cmdclass = {"build_py": BuildPyWithBpf, "build_ext": BuildOptionalExt}

try:  # setuptools >= 70.1 has its own; older ones use the wheel package's
    from setuptools.command.bdist_wheel import bdist_wheel as _bdist_wheel
except ImportError:  # pragma: no cover
    try:
        from wheel.bdist_wheel import bdist_wheel as _bdist_wheel
    except ImportError:
        _bdist_wheel = None

if _bdist_wheel is not None:

    class BdistWheelPlatform(_bdist_wheel):
        """The wheel's tag (docs/packaging.md#the-wheels-tag). The BPF object
        is compiled for one architecture (__TARGET_ARCH_*, from `uname -m`),
        so the wheel is one architecture's; without C extensions its code
        links against nothing (libbpf and libc are opened with ctypes at run
        time), so it is py3-none-manylinux_2_17_<arch>, the oldest glibc
        baseline a package index takes. With C extensions built (NATIVE_EXTENSIONS) it
        keeps the cpXY-cpXY-linux_<arch> tag setuptools gives them, and
        scripts/wheel has `auditwheel repair` prove the manylinux tag their
        symbols allow."""

        def get_tag(self):
            impl, abi, plat = super().get_tag()
            if self.get_finalized_command("build_ext")._built():
                return impl, abi, plat
            return "py3", "none", manylinux_tag(plat)

    cmdclass["bdist_wheel"] = BdistWheelPlatform


def manylinux_tag(plat: str) -> str:
    """linux_x86_64 -> manylinux_2_17_x86_64 (PyPI refuses linux_*)."""
    if not plat.startswith("linux_"):
        raise SystemExit(f"error: otel-exec: wheels are built for Linux only, not {plat}")
    return "manylinux_2_17_" + plat.removeprefix("linux_")


class PlatformDistribution(Distribution):
    """Not pure: the wheel's files go to platlib, the wheel is not 'any'."""

    def has_ext_modules(self):
        return True


setup(cmdclass=cmdclass, distclass=PlatformDistribution, ext_modules=NATIVE_EXTENSIONS)
