"""What the BCC backend needs around it: the `bcc` Python module and kernel
headers for BCC to compile against.

- ``import_bcc()``: Debian/Ubuntu's python3-bpfcc installs `bcc` for the
  distribution's /usr/bin/python3 only (/usr/lib/python3/dist-packages); the
  agent often runs from a venv or another build of the same Python version.
  When a plain import fails, the package is loaded from there by file
  location, without putting the rest of dist-packages on sys.path.
- ``headers_problem()``: BCC compiles against /lib/modules/$(uname -r)/build
  (with /source beside it on Debian's split packages), or the tree that
  BCC_KERNEL_SOURCE names.
- ``prepare_headers()`` (also ``python -m otel_exec.bcc.toolchain
  prepare-headers``): for a kernel whose own headers are not packaged, one
  tree made of the distribution's nearest installed headers (Debian splits
  them into linux-headers-X-common and linux-headers-X-ARCH; BCC_KERNEL_SOURCE
  takes one directory), for BCC_KERNEL_SOURCE. That is safe for
  bpf/otel_exec_bcc.c only because it reads no kernel struct: the headers
  give it helper prototypes and integer types, and tracepoint fields come
  from tracefs (docs/backends.md).
"""
from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType

DIST_PACKAGES = Path("/usr/lib/python3/dist-packages")
KERNEL_SOURCE_ENV = "BCC_KERNEL_SOURCE"
MODULES_DIR = Path("/lib/modules")
HEADERS_ROOT = Path("/usr/src")
CACHE_DIR = Path("/var/cache/otel-exec/bcc-kernel-source")
PACKAGES = ("bpfcc-tools", "python3-bpfcc")


def headers_package(release: str | None = None) -> str:
    return f"linux-headers-{release or os.uname().release}"


def install_hint(release: str | None = None) -> str:
    return f"apt-get install {' '.join(PACKAGES)} {headers_package(release)}"


def import_bcc(dist_packages: Path = DIST_PACKAGES) -> ModuleType:
    """The bcc module; ImportError says why it cannot be had."""
    try:
        import bcc

        return bcc
    except ImportError:
        pass
    init = dist_packages / "bcc" / "__init__.py"
    if not init.exists():
        raise ImportError(f"no python module `bcc` (python3-bpfcc installs it in {dist_packages})")
    # python3-bpfcc is pure Python over libbcc.so (ctypes): any interpreter of
    # the same major version loads it, by file location so that nothing else
    # from dist-packages shadows this environment's packages.
    spec = importlib.util.spec_from_file_location("bcc", init, submodule_search_locations=[str(init.parent)])
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {init}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bcc"] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # libbcc.so missing, or a bcc built for another Python
        sys.modules.pop("bcc", None)
        raise ImportError(f"{init} does not load: {e}") from None
    return module


def kernel_build_dir(release: str | None = None) -> Path:
    return MODULES_DIR / (release or os.uname().release) / "build"


def headers_problem(environ: dict[str, str] | None = None, release: str | None = None) -> str | None:
    """Why BCC has no kernel headers to compile against, or None."""
    env = os.environ if environ is None else environ
    source = env.get(KERNEL_SOURCE_ENV)
    if source:
        if (Path(source) / "include" / "linux" / "kconfig.h").exists():
            return None
        return f"{KERNEL_SOURCE_ENV}={source} is not a kernel header tree (no include/linux/kconfig.h)"
    build = kernel_build_dir(release)
    if build.is_dir():
        return None
    return (f"no kernel headers for {release or os.uname().release} ({build} is missing; "
            f"or set {KERNEL_SOURCE_ENV}, see docs/backends.md)")


def bcc_problem() -> str | None:
    """Why the BCC backend cannot run here (module or headers), or None."""
    try:
        import_bcc()
    except ImportError as e:
        return str(e)
    return headers_problem()


_VERSION = re.compile(r"^linux-headers-(\d+)\.(\d+)\.(\d+)(?:-(\d+))?-(.+)$")


def _version_key(name: str) -> tuple[int, ...] | None:
    m = _VERSION.match(name)
    if not m:
        return None
    return tuple(int(x or 0) for x in m.groups()[:4])


def installed_headers(root: Path = HEADERS_ROOT) -> list[Path]:
    """Installed per-flavour header trees (each with a Makefile, and a
    generated/ include directory), nearest to the running kernel first:
    the same major.minor before others, then the newest."""
    running = tuple(int(x) for x in re.findall(r"\d+", os.uname().release)[:2])
    found = []
    try:
        names = os.listdir(root)
    except OSError:
        return []
    for name in names:
        key = _version_key(name)
        path = root / name
        if key is None or name.endswith(("-common", "-common-rt")):
            continue
        if not (path / "include" / "generated").is_dir():
            continue
        found.append((key[:2] != running, tuple(-k for k in key), path))
    return [p for *_, p in sorted(found)]


def _common_dir(headers: Path) -> Path | None:
    """Debian's arch-independent half of a split header package."""
    m = re.match(r"^(linux-headers-\d+\.\d+\.\d+(?:-\d+)?)-", headers.name)
    if m:
        common = headers.parent / f"{m.group(1)}-common"
        if common.is_dir():
            return common
    # The Makefile of the flavour tree includes the common tree's.
    try:
        text = (headers / "Makefile").read_text(errors="replace")
    except OSError:
        return None
    m = re.search(r"include\s+(\S+)/Makefile", text)
    if m:
        common = (headers / m.group(1)).resolve()
        if common.is_dir():
            return common
    return None


def _merge(dest: Path, *sources: Path) -> None:
    """dest becomes the union of the source trees, later sources winning: a
    directory present in several is made and merged, anything else is a
    symlink to the one that wins. Few links: most directories exist once."""
    dest.mkdir(parents=True, exist_ok=True)
    entries: dict[str, list[Path]] = {}
    for src in sources:
        try:
            for name in os.listdir(src):
                entries.setdefault(name, []).append(src / name)
        except OSError:
            continue
    for name, paths in entries.items():
        target = dest / name
        dirs = [p for p in paths if p.is_dir() and not p.is_symlink()]
        if len(dirs) > 1 and len(dirs) == len(paths):
            _merge(target, *dirs)
            continue
        winner = paths[-1].resolve()
        if target.is_symlink() or target.exists():
            continue
        target.symlink_to(winner)


def prepare_headers(headers: Path | None = None, cache: Path = CACHE_DIR) -> Path:
    """A single header tree for BCC_KERNEL_SOURCE: `headers` (default: the
    nearest installed, see installed_headers) merged with its -common half.
    Idempotent: an existing complete tree is reused."""
    if headers is None:
        candidates = installed_headers()
        if not candidates:
            raise FileNotFoundError(f"no linux-headers-* trees in {HEADERS_ROOT}; install linux-headers-"
                                    f"{os.uname().release}, or the distribution's nearest (e.g. linux-headers-amd64)")
        headers = candidates[0]
    dest = cache / headers.name
    if (dest / ".complete").exists():
        return dest
    tmp = cache / f".{headers.name}.{os.getpid()}"
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    common = _common_dir(headers)
    _merge(tmp, *([common] if common else []), headers)
    (tmp / ".complete").write_text(f"{headers}\n{common or ''}\n")
    try:
        tmp.rename(dest)
    except OSError:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)  # made by a concurrent run meanwhile
        if not (dest / ".complete").exists():
            raise
    return dest


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m otel_exec.bcc.toolchain")
    sub = parser.add_subparsers(dest="cmd", required=True)
    prep = sub.add_parser("prepare-headers", help="print a header tree for BCC_KERNEL_SOURCE (made if needed)")
    prep.add_argument("--headers", type=Path, help="a /usr/src/linux-headers-* tree (default: the nearest)")
    prep.add_argument("--cache", type=Path, default=CACHE_DIR)
    sub.add_parser("check", help="say whether the BCC backend can run here")
    args = parser.parse_args(argv)
    if args.cmd == "prepare-headers":
        try:
            print(prepare_headers(args.headers, args.cache))
        except OSError as e:
            print(f"otel-exec: error: {e}", file=sys.stderr)
            return 1
        return 0
    problem = bcc_problem()
    print(problem or "the BCC backend can run here")
    return 1 if problem else 0


if __name__ == "__main__":
    sys.exit(main())
