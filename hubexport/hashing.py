"""File digests shared by the stages (fetch of a local checkpoint, stand-ins, publish).

Public entry point: :func:`sha256_file`. Nothing here imports TensorFlow.
"""

import hashlib
import os


def sha256_file(path):
    """The sha256 of a file's bytes and its size.

    Args:
      path: the file (str or Path).

    Returns:
      (lower-case hex digest str, size in bytes int).

    Raises:
      OSError: the file cannot be opened or read.
    """
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256")  # chunked reads, GIL released
        return digest.hexdigest(), os.fstat(f.fileno()).st_size
