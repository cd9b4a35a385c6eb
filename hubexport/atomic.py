"""Small files written whole or not at all (cards, stamps), and the error a failed write gives.

Public entry points: :func:`write_text` and :func:`disk_error`.
"""

import os

from hubexport.errors import BuildError


def disk_error(action, path, reason, where):
    """The BuildError for a failed write: ``cannot ACTION PATH: REASON; check ... of WHERE``."""
    return BuildError("cannot %s %s: %s; check free space and permissions of %s"
                      % (action, path, reason, where))


def write_text(path, text):
    """Writes ``text`` (UTF-8) to ``path`` through ``.NAME.tmp-PID`` beside it, then a rename.

    Args:
      path: a pathlib.Path.
      text: str.

    Raises:
      BuildError: it cannot be written (no temporary file is left, and an
        old ``path`` stays as it was).
    """
    tmp = path.with_name(".%s.tmp-%d" % (path.name, os.getpid()))
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        if tmp.exists():
            tmp.unlink()
        raise disk_error("write", path, e.strerror or e, path.parent) from None
