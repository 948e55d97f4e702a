"""The package logger and its one filter: log lines name final output paths, never staging folders.

A run writes into a hidden staging folder beside ``OUT`` (``.OUT.staging-XXXX``, see
:mod:`topograph.io.staging`) and moves the files into ``OUT`` at the end; a log line written meanwhile
would name a folder that no longer exists once the run is over.
"""

from __future__ import annotations

import logging
import re

LOGGER_NAME = "topograph"

# ``…/.OUT.staging-abc123/OUT`` (the staged folder carries OUT's name inside a hidden holder) or the holder alone
_STAGING = re.compile(
    r"(?P<parent>[^\s'\"]*[/\\])?\.(?P<name>[^/\\\s'\"]+)\.staging-[A-Za-z0-9_]+(?:[/\\](?P=name)(?=[/\\\s'\"]|$))?"
)


def final_path_text(text: str) -> str:
    """``text`` with every staging-folder path ``…/.OUT.staging-abc123[/OUT]`` replaced by ``…/OUT``."""
    return _STAGING.sub(lambda m: (m.group("parent") or "") + m.group("name"), text)


class FinalPathFilter(logging.Filter):
    """Rewrites staging-folder paths in a record's message and arguments into the final ``OUT`` paths,
    and command-line flags into Python arguments inside a Python API call (:func:`topograph.hints.phrase`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from topograph.hints import is_python_api, phrase

        if is_python_api() and isinstance(record.msg, str) and "--" in record.msg:
            record.msg = phrase(record.msg)
        if isinstance(record.msg, str) and ".staging-" in record.msg:
            record.msg = final_path_text(record.msg)
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(
                final_path_text(str(a)) if ".staging-" in str(a) and not isinstance(a, (int, float)) else a
                for a in record.args
            )
        return True


def install_filters() -> None:
    """Attach :class:`FinalPathFilter` to the package logger once (every module logs through it)."""
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(f, FinalPathFilter) for f in logger.filters):
        logger.addFilter(FinalPathFilter())
