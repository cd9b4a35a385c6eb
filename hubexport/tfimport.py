"""Imports TensorFlow once, without its start-up chatter on the terminal.

TensorFlow prints several lines to stderr while it loads and initializes
devices (oneDNN notice, CUDA probes on machines without a GPU, absl's
"before InitializeLog" banner); ``TF_CPP_MIN_LOG_LEVEL`` no longer hides them
all. :func:`import_tensorflow` captures stderr (file descriptor 2) while
importing, replays every line that is not such a notice, and quiets
TensorFlow's Python deprecation warnings. Commands that need TensorFlow call
it first; commands that do not (``--help``, ``list``, ``fetch``) never do.
"""

import contextlib
import os
import re
import signal
import sys
import tempfile
import threading

_NOISE = re.compile(
    r"oneDNN custom operations|cuda|CUDA|cuInit|InitializeLog|cpu_feature_guard|"
    r"rebuild TensorFlow with the appropriate compiler flags|"
    r"To enable the following instructions|TF-TRT|Unable to register cu")


def import_tensorflow():
    """Returns the ``tensorflow`` module, imported with its start-up notices filtered.

    Lines on stderr that are not start-up notices are passed through.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with _sigint_deferred(), tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # device probing happens here
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if line.strip() and not _NOISE.search(line):
                    print(line, file=sys.stderr)
    tf.get_logger().setLevel("ERROR")
    return tf


@contextlib.contextmanager
def _sigint_deferred():
    """Holds back SIGINT (Ctrl-C) until the block is done, then delivers it.

    A KeyboardInterrupt raised while TensorFlow's native start-up code is on
    the stack does not unwind: the process aborts (SIGABRT, exit code 134,
    no message; and stderr is still redirected). The import takes a few
    seconds, so Ctrl-C during it is deferred to its end, where it raises
    KeyboardInterrupt as usual (the CLI then exits 130). Only the main
    thread can set signal handlers; elsewhere nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            signal.raise_signal(signal.SIGINT)  # handled as the previous handler says
