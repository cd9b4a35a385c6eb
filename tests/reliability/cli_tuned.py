"""``hubexport`` with tuned fetch constants, for network fault tests.

Usage: ``python cli_tuned.py '{"READ_TIMEOUT": 1.5, ...}' fetch NAME ...``

Sets the named module constants of :mod:`hubexport.fetch` (which it reads
at call time and documents as tunable), then runs the real console entry
point :func:`hubexport.cli.main` with the remaining arguments, so exit
codes and messages are exactly the command line's; only timeouts and
backoff are shorter than the defaults (60 s read timeout).
"""

import json
import sys

from hubexport import fetch

for _name, _value in json.loads(sys.argv[1]).items():
    if not hasattr(fetch, _name):
        raise SystemExit("cli_tuned.py: hubexport.fetch has no constant %s" % _name)
    setattr(fetch, _name, _value)

from hubexport.cli import main  # noqa: E402

main(sys.argv[2:])
