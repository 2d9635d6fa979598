"""The conversation so far as text, turn by turn, within a budget: what a fresh session is
seeded with when the service refuses to resume (so the user does not start over).

Each side's words come from what the session sees anyway: the user's from the text it sends
and the input transcription, the model's from the output transcription (or its text parts in
TEXT mode). The oldest turns go first when the budget is exceeded.
"""

from __future__ import annotations

from collections import deque

from geminilive.messages import Content, Part

__all__ = ["Transcript"]


class Transcript:
    def __init__(self, max_chars: int = 8000) -> None:
        self.max_chars = max_chars
        self._turns: deque[tuple[str, str]] = deque()  # (role, text), finished turns
        self._chars = 0
        self._user: list[str] = []
        self._model: list[str] = []

    def user(self, text: str) -> None:
        self._user.append(text)

    def model(self, text: str) -> None:
        self._model.append(text)

    def end_turn(self) -> None:
        """The model's turn ended: what each side said since goes in, oldest out past the budget."""
        for role, pieces in (("user", self._user), ("model", self._model)):
            text = " ".join("".join(pieces).split())
            if text:
                self._turns.append((role, text))
                self._chars += len(text)
            pieces.clear()
        while self._chars > self.max_chars and self._turns:
            self._chars -= len(self._turns.popleft()[1])

    def turns(self) -> list[Content]:
        """The finished turns as ``clientContent`` turns (roles "user" and "model")."""
        return [Content(role=role, parts=[Part(text=text)]) for role, text in self._turns]
