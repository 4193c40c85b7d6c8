"""What .ci/run relies on: with OTEL_EXEC_REQUIRE_KERNEL=1 a test that skips
because a marked prerequisite is missing fails the run (tests/helpers/kernel_guard.py).
Each case runs real tests of the suite in a pytest subprocess with the
prerequisite hidden, with and without the variable."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_hidden(tmp_path: Path, hidden_module: str, source: str, test: str, required: bool) -> tuple[int, str]:
    """pytest on `test` with a module of that name first on sys.path."""
    shadow = tmp_path / "shadow"
    shadow.mkdir(exist_ok=True)
    (shadow / f"{hidden_module}.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "OTEL_EXEC_REQUIRE_KERNEL"}
    env["PYTHONPATH"] = str(shadow)
    if required:
        env["OTEL_EXEC_REQUIRE_KERNEL"] = "1"
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfEs", test],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return out.returncode, out.stdout + out.stderr


@pytest.mark.parametrize("required", [False, True])
def test_a_missing_yaml_fails_the_run_when_required(tmp_path: Path, required: bool) -> None:
    """A module skipped at import (test_configs.py without PyYAML)."""
    rc, out = run_hidden(tmp_path, "yaml", "raise ModuleNotFoundError('PyYAML hidden by the test', name='yaml')\n",
                         "tests/static/test_configs.py", required)
    if required:
        assert rc == 1, out
        assert "(whole module) tests/static/test_configs.py" in out and "PyYAML hidden by the test" in out, out
    else:
        assert rc == 5, out  # the module's only outcome is its skip: no tests ran
        assert "1 skipped" in out and "failed" not in out, out


@pytest.mark.parametrize("required", [False, True])
def test_a_missing_rotel_fails_the_run_when_required(tmp_path: Path, required: bool) -> None:
    """A test skipped while it runs (a needs_rotel test without rotel-agent)."""
    rc, out = run_hidden(tmp_path, "rotel", "", "tests/export/test_tls.py::test_rotel_receivers_have_no_tls", required)
    if required:
        assert rc == 1, out
        assert "1 failed" in out and "has no rotel-agent binary" in out, out
    else:
        assert rc == 0, out
        assert "1 skipped" in out, out


def test_an_unmarked_skip_fails_when_required(tmp_path: Path) -> None:
    """A skip with no prerequisite mark is a failure too: no silent skips."""
    (tmp_path / "conftest.py").write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
        "from tests.helpers.kernel_guard import pytest_runtest_makereport, pytest_make_collect_report  # noqa: F401\n")
    (tmp_path / "test_x.py").write_text(
        "import pytest\n\ndef test_skips():\n    pytest.skip('nothing marked')\n\n"
        "@pytest.mark.needs_cgroup2\ndef test_cgroup2_skip():\n    pytest.skip('cgroup v2 present or not')\n")
    env = dict(os.environ, OTEL_EXEC_REQUIRE_KERNEL="1")
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfEs",
                          "-c", os.devnull, "--rootdir", str(tmp_path), str(tmp_path)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    assert "FAILED" in text and "test_skips" in text and "no prerequisite mark" in text, text
    from tests.helpers.kernel_guard import MACHINE_LACKS
    if MACHINE_LACKS["needs_cgroup2"]() is None:  # this machine has cgroup v2: its skip fails too
        assert "2 failed" in text, text
    else:
        assert "1 failed, 1 skipped" in text, text
