"""The one exception type users see.

Every error a user can cause (bad path, unreadable image, too few images, degenerate tilt ...) is raised
as :class:`TopographError` with a one-line message naming the cause and the fix. The CLI prints it
without a traceback and exits non-zero.
"""

from __future__ import annotations


class TopographError(Exception):
    """A user-facing error: ``cause`` says what is wrong, ``fix`` says what to do about it."""

    def __init__(self, cause: str, fix: str | None = None) -> None:
        self.cause = cause
        self.fix = fix
        super().__init__(f"{cause} — {fix}" if fix else cause)


class OptionalDependencyError(TopographError):
    """An optional package is needed for the requested feature but is not installed."""

    def __init__(self, package: str, feature: str, extra: str | None = None) -> None:
        how = f"pip install 'topograph[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"{feature} needs the package '{package}', which is not installed", f"run: {how}")
