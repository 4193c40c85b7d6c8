"""Shared pytest wiring: re-exports the kernel-skip guard hooks
(tests/helpers/kernel_guard.py) and the session-scoped ``progs`` fixture
(tests/helpers/progs.py), the rotel collector and the TLS receiver fixtures."""
from tests.helpers.kernel_guard import (  # noqa: F401
    pytest_make_collect_report,
    pytest_runtest_makereport,
    pytest_sessionfinish,
    pytest_terminal_summary,
)
from tests.helpers.progs import progs  # noqa: F401
from tests.helpers.agent_run import agents_stopped  # noqa: F401
from tests.helpers.collector import collector, make_collector  # noqa: F401
from tests.helpers.tls import pki, receiver  # noqa: F401
