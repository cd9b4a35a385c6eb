"""Fixtures and the report hook of the reliability suite (issue 7).

Fixtures:
  case      a :class:`reliability_support.Case` the test fills in (the row
            of docs/RELIABILITY.md: case, expected, observed, counters).
  sandbox   a :class:`reliability_support.Sandbox` in the test's tmp_path.

At the end of a session that ran reliability tests, their rows are merged
into build/reliability/results.json and docs/RELIABILITY.md is regenerated
(scripts/reliability_report.py). A session running only some of the tests
updates their rows and keeps the others.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import reliability_support as rs  # noqa: E402

REPO = HERE.parents[1]
RESULTS = REPO / "build" / "reliability" / "results.json"

_rows: dict[str, dict] = {}
_deselected: list[str] = []


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


def _is_ours(item) -> bool:
    return Path(str(item.fspath)).resolve().is_relative_to(HERE)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not _is_ours(item):
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        c = getattr(item, "_reliability_case", None) or rs.Case(item.nodeid)
        row = c.to_json()
        row.update(outcome=report.outcome, seconds=round(report.duration, 2),
                   title=row["title"] or item.name, group=row["group"] or "Other")
        _rows[item.nodeid] = row
    elif report.when == "teardown" and not report.passed and item.nodeid in _rows:
        _rows[item.nodeid]["outcome"] = "failed"


def pytest_deselected(items):
    _deselected.extend(i.nodeid for i in items if _is_ours(i))


def _load_report_module():
    spec = importlib.util.spec_from_file_location(
        "reliability_report", REPO / "scripts" / "reliability_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_sessionfinish(session, exitstatus):
    if not _rows or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    ours = [i for i in session.items if _is_ours(i)]
    files_run = {Path(str(i.fspath)).name for i in ours}
    files_all = {p.name for p in HERE.glob("test_*.py")}
    full = not _deselected and files_run == files_all and len(_rows) == len(ours)
    old = {}
    if RESULTS.is_file() and not full:
        try:
            old = {r["test"]: r for r in json.loads(RESULTS.read_text())["rows"]}
        except (OSError, ValueError, KeyError):
            old = {}
        old = {k: v for k, v in old.items()
               if (HERE / k.split("::")[0].rsplit("/", 1)[-1]).is_file()}
    old.update(_rows)
    results = {"updated": datetime.datetime.now(datetime.timezone.utc).strftime(
                   "%Y-%m-%d %H:%M UTC"),
               "rows": sorted(old.values(), key=lambda r: r["test"])}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_name(".results.json.tmp-%d" % os.getpid())
    tmp.write_text(json.dumps(results, indent=1, default=str))
    tmp.replace(RESULTS)
    _load_report_module().write_report(RESULTS)


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
