"""A registry of Python functions the model may call; the conversation answers ``toolCall``
with their results and cancels them on ``toolCallCancellation``."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from geminilive.messages import FunctionCall, FunctionDeclaration, FunctionResponse, Tool

__all__ = ["ToolRegistry"]

_SCHEMA_TYPES: dict[Any, str] = {str: "STRING", int: "INTEGER", float: "NUMBER", bool: "BOOLEAN", dict: "OBJECT"}


def _schema(annotation: Any) -> dict[str, Any]:
    origin = get_origin(annotation)
    if origin is Literal:
        values = get_args(annotation)
        return {"type": _SCHEMA_TYPES.get(type(values[0]), "STRING"), "enum": [str(v) for v in values]}
    if origin in (list, tuple):
        args = get_args(annotation)
        return {"type": "ARRAY", "items": _schema(args[0]) if args else {"type": "STRING"}}
    if origin is Union or str(origin) == "<class 'types.UnionType'>":
        members = [a for a in get_args(annotation) if a is not type(None)]
        return {**_schema(members[0]), "nullable": True}
    return {"type": _SCHEMA_TYPES.get(annotation, "STRING")}


class ToolRegistry:
    """Functions (sync or async) the model can call.

    tools = ToolRegistry()

    @tools.register
    async def get_weather(city: str) -> dict:
        \"\"\"The weather in a city.\"\"\"
        return {"sky": "clear"}
    """

    def __init__(self) -> None:
        self._functions: dict[str, Callable[..., Any]] = {}
        self._declarations: list[FunctionDeclaration] = []
        self._running: dict[str, asyncio.Task[None]] = {}

    def register(
        self, function: Callable[..., Any] | None = None, *, behavior: Literal["BLOCKING", "NON_BLOCKING"] | None = None
    ) -> Any:
        """Register ``function`` (usable as ``@register`` or ``@register(behavior=...)``)."""

        def add(fn: Callable[..., Any]) -> Callable[..., Any]:
            hints = get_type_hints(fn)
            signature = inspect.signature(fn)
            properties = {name: _schema(hints.get(name, str)) for name in signature.parameters}
            required = [n for n, p in signature.parameters.items() if p.default is inspect.Parameter.empty]
            parameters = {"type": "OBJECT", "properties": properties, "required": required} if properties else None
            self._functions[fn.__name__] = fn
            self._declarations.append(
                FunctionDeclaration(
                    name=fn.__name__, description=inspect.getdoc(fn), parameters=parameters, behavior=behavior
                )
            )
            return fn

        return add(function) if function is not None else add

    @property
    def tools(self) -> list[Tool]:
        """The declarations, for ``LiveConfig(tools=...)``."""
        return [Tool(function_declarations=list(self._declarations))] if self._declarations else []

    async def call(self, call: FunctionCall) -> FunctionResponse:
        """Run one call; errors become ``{"error": ...}`` responses, as the API expects."""
        function = self._functions.get(call.name)
        if function is None:
            return FunctionResponse(id=call.id, name=call.name, response={"error": f"unknown function {call.name}"})
        try:
            result = function(**(call.args or {}))
            if isinstance(result, Awaitable):
                result = await result
        except Exception as exc:  # the model should hear about a failing tool, not crash the loop
            return FunctionResponse(id=call.id, name=call.name, response={"error": f"{type(exc).__name__}: {exc}"})
        return FunctionResponse(
            id=call.id, name=call.name, response=result if isinstance(result, dict) else {"output": result}
        )

    def start(self, calls: list[FunctionCall], respond: Callable[[FunctionResponse], Awaitable[None]]) -> None:
        """Run calls concurrently; each answers through ``respond`` when done."""
        for call in calls:

            async def run(call: FunctionCall = call) -> None:
                try:
                    await respond(await self.call(call))
                finally:
                    self._running.pop(call.id or call.name, None)

            self._running[call.id or call.name] = asyncio.create_task(run())

    def cancel(self, ids: list[str]) -> None:
        for call_id in ids:
            task = self._running.pop(call_id, None)
            if task is not None:
                task.cancel()

    def cancel_all(self) -> None:
        self.cancel(list(self._running))
