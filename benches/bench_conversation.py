"""The latency table of a voice conversation on the PulseAudio loopback: espeak-ng speech into
the virtual microphone, `start_audio_conversation` with the emulator in echo mode, the reply
out of the virtual speaker, then a barge-in (tests/loopback.py is the scenario; the test
test_e2e_loopback.py asserts on the same run).

Columns (ms): end->play = end of user speech (client VAD) to first model audio played;
intr->sil = `interrupted` to the first silent device callback; capt->send = capture callback
to the frame written to the socket; recv->play = audio message received to played (median).

    python benches/bench_conversation.py
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from loopback import loopback_conversation
from pulse import pulse_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="(same run; accepted for `geminilive bench --quick`)")
    parser.parse_args()
    with pulse_server(), tempfile.TemporaryDirectory() as workdir:
        result = asyncio.run(loopback_conversation(Path(workdir)))
    print(result.latency_table)
    print(f"playout: {result.playout}")


if __name__ == "__main__":
    main()
