"""Errors raised by hubexport and the exit codes the command line maps them to.

Every error carries a one-line message that names the file, field or URL at
fault and what to do. The CLI prints ``error: <message>`` and exits with
``exit_code``; it never prints a traceback for these.

Exit codes (documented in ``hubexport --help``):
  0 ok, 1 failure, 2 usage or spec error, 3 verification failed,
  130 interrupted (SIGINT).
"""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_VERIFY = 3
EXIT_INTERRUPTED = 130


class HubexportError(Exception):
    """Base class of all expected failures; ``exit_code`` is 1."""

    exit_code = EXIT_FAILURE


class SpecError(HubexportError):
    """A model spec is invalid. Message format: ``FILE:LINE: field: problem``.

    Exit code 2.
    """

    exit_code = EXIT_USAGE


class UsageError(HubexportError):
    """The command line asks for something that does not exist. Exit code 2."""

    exit_code = EXIT_USAGE


class FetchError(HubexportError):
    """A download failed (HTTP error, timeout, refused redirect)."""


class ChecksumError(FetchError):
    """Downloaded or cached bytes do not match the spec's size or checksum."""


class ArchiveError(HubexportError):
    """A tarball is unsafe, damaged or lacks the checkpoint member."""


class CheckpointError(HubexportError):
    """A checkpoint lacks variables the net needs, or has wrong shapes/dtypes."""


class BuildError(HubexportError):
    """Building or writing a module failed."""


class InputSizeError(BuildError):
    """An input image is smaller than the net accepts."""


class PublishError(HubexportError):
    """A registry is damaged, or publishing would overwrite a released version."""


class VerificationError(HubexportError):
    """A module, archive or registry does not match its spec. Exit code 3."""

    exit_code = EXIT_VERIFY
