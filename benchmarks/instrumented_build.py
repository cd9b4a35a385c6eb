"""Child process of figures 4 and 6: runs ``hubexport build`` with stage timers.

Usage::

    BENCH_REPORT_DIR=DIR python benchmarks/instrumented_build.py build --all ...

Installs the timers of bench_instrument.py (in this process and, through the
worker initializer, in every build worker), then runs the real CLI
(``hubexport.cli.main``) with the given arguments. Every process writes a
JSON report into DIR; this one's also holds the CLI's wall time, its
/proc/self/io deltas and exit code.
"""

from __future__ import annotations

import sys
import time

import bench_instrument


def main(argv):
    io0 = bench_instrument._io()
    try:
        bench_instrument.install()
    except Exception as exc:  # noqa: BLE001 - report, and run uninstrumented
        bench_instrument.REPORT["errors"].append("instrumentation failed: %r" % exc)
    code = 0
    t0 = time.perf_counter()
    try:
        from hubexport.cli import main as cli_main

        cli_main(argv[1:])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        report = bench_instrument.REPORT
        report["seconds"] = time.perf_counter() - t0
        io1 = bench_instrument._io()
        report["io"] = {k: io1[k] - io0[k] for k in io1}
        report["exit_code"] = code
        bench_instrument.dump()
    sys.exit(code)


if __name__ == "__main__":
    main(sys.argv)
