"""The suite's own scheduling: pytest-xdist's ``--dist loadgroup`` must group.

``make test`` runs on two workers with ``--dist loadgroup``, and
tests/conftest.py gives the tests of each module-scoped fixture one
``xdist_group``, so that the fixture (a build of variants, a legacy-venv run)
is made once per run. pytest 9.2 with pytest-xdist 3.8 silently ignores the
groups (pytest-dev/pytest-xdist#1386): each worker then makes every fixture,
doubling the suite's time and disk. setup.cfg pins pytest below 9.2; this
test fails if the installed pair stops grouping.
"""

import subprocess
import sys


def test_loadgroup_puts_a_group_on_one_worker(tmp_path):
    (tmp_path / "test_grouped.py").write_text(
        "import os, pytest\n"
        "@pytest.mark.xdist_group('shared')\n"
        "@pytest.mark.parametrize('i', range(8))\n"
        "def test_grouped(i):\n"
        "    print(os.environ['PYTEST_XDIST_WORKER'])\n"
        "@pytest.mark.parametrize('i', range(8))\n"
        "def test_free(i):\n"
        "    pass\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2",
                           "--dist", "loadgroup", "-v", "-rA", "test_grouped.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    grouped = [line for line in proc.stdout.splitlines()
               if "PASSED" in line and "::test_grouped[" in line and line.startswith("[gw")]
    assert len(grouped) == 8, proc.stdout[-3000:]
    assert all(line.rstrip().endswith("@shared") for line in grouped), (
        "pytest-xdist dropped the xdist_group suffix (pytest-dev/pytest-xdist#1386):\n"
        + "\n".join(grouped))
    workers = {line.split("]")[0] for line in grouped}
    assert len(workers) == 1, "one group ran on %s:\n%s" % (sorted(workers), "\n".join(grouped))
