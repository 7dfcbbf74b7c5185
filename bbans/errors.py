"""Errors a user can cause, each mapped to a documented exit code.

The CLI prints these as one line and exits with `exit_code`; anything else is a bug, still
shown as one line (exit 3) unless BBANS_TRACEBACK is set.
"""

EXIT_OK = 0
EXIT_ERROR = 1  # generic failure (bad arguments, refused overwrite, missing data set)
EXIT_USAGE = 2  # click's own usage errors
EXIT_CORRUPT = 3  # archive is corrupt, truncated, foreign or from a future version
EXIT_MISMATCH = 4  # archive cannot be reproduced here (model, device class) or a checksum failed
EXIT_INTERRUPTED = 130  # SIGINT, 128 + 2
EXIT_TERMINATED = 143  # SIGTERM, 128 + 15


class BBANSError(Exception):
    exit_code = EXIT_ERROR


class DataNotFoundError(BBANSError):
    pass


class ArchiveError(BBANSError):
    exit_code = EXIT_CORRUPT


class MismatchError(BBANSError):
    exit_code = EXIT_MISMATCH


class ANSError(BBANSError, ValueError):
    """Invalid arguments to the rANS coder (checked mode) or a decode that ran off its message."""


class Terminated(BaseException):
    """SIGTERM, raised where the process is so that cleanup runs as for Ctrl-C."""
