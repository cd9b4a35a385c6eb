"""The report hooks of the reliability suite (issue 7): docs/RELIABILITY.md.

Registered by tests/conftest.py as a plugin (not a conftest of this
directory), so that they also run in pytest-xdist's controller, which loads
only the top conftest: the workers run the tests and attach each row to its
report; the process that receives the reports (the controller, or the only
process without xdist) keeps the rows and, at the end of a session that ran
reliability tests, merges them into build/reliability/results.json and
regenerates docs/RELIABILITY.md (scripts/reliability_report.py). A session
running only some of the tests updates their rows and keeps the others.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS = REPO / "build" / "reliability" / "results.json"

_ROW = "reliability_row"
_rows: dict[str, dict] = {}
_deselected: list[str] = []


def _is_ours(item) -> bool:
    return Path(str(item.fspath)).resolve().is_relative_to(HERE)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not _is_ours(item):
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        c = getattr(item, "_reliability_case", None) or _case(item.nodeid)
        row = c.to_json()
        row.update(outcome=report.outcome, seconds=round(report.duration, 2),
                   title=row["title"] or item.name, group=row["group"] or "Other")
        # Carried by the report, so that under pytest-xdist the controller,
        # which runs no tests, receives the row with the worker's report.
        # Plain JSON values: xdist serializes the report.
        report.user_properties.append((_ROW, json.loads(json.dumps(row, default=str))))


def pytest_runtest_logreport(report):
    """Collects the rows (in the process that writes the report: xdist's controller)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    for key, row in report.user_properties:
        if key == _ROW:
            _rows[report.nodeid] = row
    if report.when == "teardown" and not report.passed and report.nodeid in _rows:
        _rows[report.nodeid]["outcome"] = "failed"


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
    # Under pytest-xdist the controller collects nothing: judge a full run
    # by the rows' files and the selection options.
    files_run = {nodeid.split("::")[0].rsplit("/", 1)[-1] for nodeid in _rows}
    files_all = {p.name for p in HERE.glob("test_*.py")}
    selected = session.config.option.keyword or session.config.option.markexpr
    full = not _deselected and not selected and files_run == files_all
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




def _case(nodeid):
    import sys

    sys.path.insert(0, str(HERE))
    import reliability_support

    return reliability_support.Case(nodeid)
