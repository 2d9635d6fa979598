"""Reader for the recorded Live API traffic in tests/fixtures/live-recordings."""

from __future__ import annotations

from pathlib import Path

import msgspec

RECORDINGS = Path(__file__).parent / "fixtures" / "live-recordings"


class Recording(msgspec.Struct):
    name: str
    frames: list[tuple[str, bytes]]  # ("client" | "server", raw JSON)

    @property
    def client_frames(self) -> list[bytes]:
        return [f for who, f in self.frames if who == "client"]

    @property
    def server_frames(self) -> list[bytes]:
        return [f for who, f in self.frames if who == "server"]

    @property
    def vertex(self) -> bool:
        return "Vertex" in self.name


def load(path: Path) -> Recording:
    """`>N {json}` is a client frame; `<N` starts a pretty-printed server frame that runs to a
    blank line."""
    frames: list[tuple[str, bytes]] = []
    lines = path.read_text().split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(">"):
            frames.append(("client", line.split(" ", 1)[1].encode()))
        elif line.startswith("<"):
            body = [line.split(" ", 1)[1]]
            i += 1
            while i < len(lines) and lines[i].strip():
                body.append(lines[i])
                i += 1
            frames.append(("server", "\n".join(body).encode()))
        i += 1
    return Recording(path.stem.removesuffix(".websocket"), frames)


def all_recordings() -> list[Recording]:
    return [load(p) for p in sorted(RECORDINGS.glob("*.log"))]
