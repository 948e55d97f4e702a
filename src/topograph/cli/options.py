"""Typer options generated from an engine's option table (:mod:`topograph.options`).

:func:`with_config_options` adds one typer option per :class:`~topograph.options.ConfigOption` row to a
command: the flag and help text of the row, the type of the configuration field it sets. The command
receives the dotted configuration overrides as one ``config_overrides`` argument.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Optional

import typer

from topograph.options import EngineOptions, scalar_type

CONFIG_OVERRIDES = "config_overrides"


def with_config_options(table: EngineOptions) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command whose signature has a ``config_overrides: dict`` parameter: typer sees the table's
    options in its place, the command gets ``{dotted key: value}`` for the options given."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command, eval_str=True)
        params = [p for p in signature.parameters.values() if p.name != CONFIG_OVERRIDES]
        names = {p.name for p in params}
        generated: list[inspect.Parameter] = []
        for opt in table.options:
            if opt.name in names:
                raise ValueError(f"{command.__name__} already has a parameter {opt.name}")
            if opt.switch is not None:
                annotation: Any = bool
                default = typer.Option(False, opt.flag, help=opt.help)
            else:
                annotation = Optional[scalar_type(table.field_type(opt.key))]  # noqa: UP045 - a runtime type
                default = typer.Option(None, opt.flag, help=opt.help)
            generated.append(
                inspect.Parameter(opt.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
            )
        # keyword-only parameters after the command's own (typer reads names, not positions)
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            values = {opt.name: kwargs.pop(opt.name) for opt in table.options}
            return command(**kwargs, **{CONFIG_OVERRIDES: table.overrides(values)})

        wrapper.__signature__ = signature.replace(parameters=[*own, *generated])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *generated]}
        del wrapper.__wrapped__  # typer must see the generated signature, not the command's
        return wrapper

    return decorate
