"""A registry of Python functions the model may call; the conversation answers ``toolCall``
with their results and cancels them on ``toolCallCancellation``.

Hygiene the service needs from a client: a call repeated within a turn (same function and
arguments under a new id; models do this, the 3.8 guide calls them "redundant sweeps") is
answered with the first call's result, not run again; a function that raises answers with a
structured error (``{"error": {"type", "message", "retryable"}}``) instead of leaving the
call unanswered, which would stall the model.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from geminilive.messages import FunctionCall, FunctionDeclaration, FunctionResponse, Tool

__all__ = ["ToolError", "ToolRegistry"]

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


class ToolError(Exception):
    """Raise from a tool to tell the model what went wrong, and whether trying again may help
    (other exceptions count as retryable only for timeouts and connection errors)."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


def _error(kind: str, message: str, *, retryable: bool) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, "retryable": retryable}}


def call_key(call: FunctionCall) -> str:
    """What makes two calls the same call: the function and its arguments."""
    return json.dumps([call.name, call.args or {}], sort_keys=True, default=str)


class ToolRegistry:
    """Functions (sync or async) the model can call.

    tools = ToolRegistry()

    @tools.register
    async def get_weather(city: str) -> dict:
        \"\"\"The weather in a city.\"\"\"
        return {"sky": "clear"}
    """

    def __init__(self, *, answer_duplicates: bool = True) -> None:
        self._functions: dict[str, Callable[..., Any]] = {}
        self._declarations: list[FunctionDeclaration] = []
        self._running: dict[str, asyncio.Task[None]] = {}
        self.answer_duplicates = answer_duplicates
        # This turn's calls by (name, arguments): the first one's result, when it comes.
        self._this_turn: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.duplicates_answered = 0

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
        """Run one call; an exception becomes a structured error response (see the module)."""
        return FunctionResponse(id=call.id, name=call.name, response=await self._result(call))

    async def _result(self, call: FunctionCall) -> dict[str, Any]:
        function = self._functions.get(call.name)
        if function is None:
            return _error("UnknownFunction", f"no function {call.name!r}", retryable=False)
        try:
            result = function(**(call.args or {}))
            if isinstance(result, Awaitable):
                result = await result
        except ToolError as exc:
            return _error(type(exc).__name__, str(exc), retryable=exc.retryable)
        except Exception as exc:  # the model should hear about a failing tool, not crash the loop
            retryable = isinstance(exc, (TimeoutError, ConnectionError))
            return _error(type(exc).__name__, str(exc), retryable=retryable)
        return result if isinstance(result, dict) else {"output": result}

    def new_turn(self) -> None:
        """A turn ended: calls from now on are not duplicates of earlier ones."""
        self._this_turn.clear()

    def start(self, calls: list[FunctionCall], respond: Callable[[FunctionResponse], Awaitable[None]]) -> None:
        """Run calls concurrently; each answers through ``respond`` when done. A duplicate of a
        call of this turn waits for that call's result instead of running (if that call is
        cancelled, the duplicate runs itself)."""
        for call in calls:
            key = call_key(call)
            first = self._this_turn.get(key) if self.answer_duplicates else None
            task = self._run(call, respond) if first is None else self._run_duplicate(call, first, respond)
            if first is None:
                self._this_turn[key] = asyncio.get_running_loop().create_future()
            self._running[call.id or call.name] = asyncio.create_task(task)

    async def _run(self, call: FunctionCall, respond: Callable[[FunctionResponse], Awaitable[None]]) -> None:
        outcome = self._this_turn.get(call_key(call))
        try:
            try:
                result = await self._result(call)
            except asyncio.CancelledError:
                if outcome is not None and not outcome.done():
                    outcome.cancel()
                raise
            if outcome is not None and not outcome.done():
                outcome.set_result(result)
            await respond(FunctionResponse(id=call.id, name=call.name, response=result))
        finally:
            self._running.pop(call.id or call.name, None)

    async def _run_duplicate(
        self,
        call: FunctionCall,
        first: asyncio.Future[dict[str, Any]],
        respond: Callable[[FunctionResponse], Awaitable[None]],
    ) -> None:
        try:
            try:
                result = await asyncio.shield(first)
                self.duplicates_answered += 1
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # this call itself was cancelled
                result = await self._result(call)  # the first one was: run this one
            await respond(FunctionResponse(id=call.id, name=call.name, response=result))
        finally:
            self._running.pop(call.id or call.name, None)

    def cancel(self, ids: list[str]) -> None:
        for call_id in ids:
            task = self._running.pop(call_id, None)
            if task is not None:
                task.cancel()

    def cancel_all(self) -> None:
        self.cancel(list(self._running))
