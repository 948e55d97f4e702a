"""The one stderr console of the command line: log lines, tables and progress bars share it, so a live
progress display and the lines printed above it do not garble each other."""

from __future__ import annotations

from rich.console import Console

err_console = Console(stderr=True)
