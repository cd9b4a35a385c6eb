"""Fixtures of the reliability suite (issue 7).

Fixtures:
  case      a :class:`reliability_support.Case` the test fills in (the row
            of docs/RELIABILITY.md: case, expected, observed, counters).
  sandbox   a :class:`reliability_support.Sandbox` in the test's tmp_path.
  v3_module inception_v2 classification v3, built once per session.

The rows become docs/RELIABILITY.md through the hooks of report_hooks.py
(registered by tests/conftest.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import reliability_support as rs  # noqa: E402


@pytest.fixture
def case(request):
    """The test's row in docs/RELIABILITY.md."""
    c = rs.Case(request.node.nodeid)
    request.node._reliability_case = c
    return c


@pytest.fixture
def sandbox(tmp_path):
    """A directory tree where only cache/, out/ and registry/ may change."""
    return rs.Sandbox(tmp_path / "sandbox")


@pytest.fixture(scope="session")
def v3_module(tmp_path_factory, standins):
    """inception_v2 classification v3 built once by the CLI from the stand-in.

    Returns:
      dict: ``out`` (output dir), ``cache`` (its cache), ``module`` (module dir),
      ``reference`` (:class:`reliability_support.ModuleReference`), ``seconds``.
    """
    root = tmp_path_factory.mktemp("v3-module")
    out, cache = root / "out", root / "cache"
    result = rs.run_cli(["build", "inception_v2", "--version", "3", "--kind", "classification",
                         "--specs", standins / "specs", "--mirror", standins,
                         "--cache-dir", cache, "--output", out], timeout=900)
    result.check_ok()
    module = out / rs.HANDLE_DIR / "3"
    return {"out": out, "cache": cache, "module": module, "seconds": result.seconds,
            "reference": rs.reference_of(module)}
