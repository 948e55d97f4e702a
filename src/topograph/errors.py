"""The exception types users see, and the exit status of each.

Every error a user can cause (bad path, unreadable image, too few images, degenerate tilt ...) is raised
as :class:`TopographError` with a one-line message naming the cause and the fix. The CLI prints it
without a traceback and exits with the error's :attr:`~TopographError.exit_code`:

=====  ================================================================================
code   meaning
=====  ================================================================================
0      success: the result can be used (warnings, if any, are in the log and summary.json)
1      unexpected internal error (a bug: the traceback is printed; please report it)
2      usage error: unknown option, missing argument, malformed value on the command line
3      input error: the data or the environment cannot give a result (missing files, one
       image, mixed sizes, no overlap, contradictory metadata, a missing optional package)
4      quality failure: the run finished but its result failed a quality check
130    interrupted (Ctrl-C)
=====  ================================================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_QUALITY = 4
EXIT_INTERRUPTED = 130


class TopographError(Exception):
    """A user-facing error: ``cause`` says what is wrong, ``fix`` says what to do about it."""

    exit_code: int = EXIT_INPUT
    """Exit status of the command line for this error (3: the input cannot give a result)."""

    def __init__(self, cause: str, fix: str | None = None) -> None:
        from topograph.hints import phrase  # a Python caller reads arguments where the CLI reads --flags

        self.cause = phrase(cause)
        self.fix = phrase(fix) if fix else fix
        cause, fix = self.cause, self.fix
        super().__init__(f"{cause} — {fix}" if fix else cause)


class UsageError(TopographError):
    """A malformed command-line value that the option parser could not catch (exit status 2)."""

    exit_code = EXIT_USAGE


class QualityError(TopographError):
    """The run finished but its result failed a quality check, so it must not be used (exit status 4)."""

    exit_code = EXIT_QUALITY


class OptionalDependencyError(TopographError):
    """An optional package is needed for the requested feature but is not installed."""

    def __init__(self, package: str, feature: str, extra: str | None = None) -> None:
        how = f"pip install 'topograph[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"{feature} needs the package '{package}', which is not installed", f"run: {how}")
