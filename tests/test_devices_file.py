"""Unpaced, deterministic device tests: ALSA's `file` plugin over the `null` PCM reads a raw
file as the capture device and writes playback to a file, so exact sample content can be
checked end to end through cpal, the callbacks, the rings, the playout buffer and the worker.

They run in a subprocess whose HOME holds the test's `.asoundrc` (ALSA reads its configuration
once per process), with the `default` device redefined as that file pair, and whose runtime
directory hides any running PulseAudio server (whose ALSA hook would claim `default`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

ASOUNDRC = """
pcm.!default {{
  type asym
  playback.pcm "fileout"
  capture.pcm "filein"
}}
pcm.fileout {{
  type plug
  slave {{ pcm {{ type file slave.pcm "null" file "{out}" format "raw" }} format S16_LE rate 48000 channels 1 }}
}}
pcm.filein {{
  type plug
  slave {{
    pcm {{ type file slave.pcm "null" file "/dev/null" infile "{inp}" format "raw" }}
    format S16_LE rate 48000 channels 1
  }}
}}
"""

SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from geminilive._native import CaptureStream, PlaybackStream

    which, inp, out = sys.argv[1:4]
    if which == "capture":
        # The null PCM runs flat out: a long period keeps ALSA's file plugin from skipping data,
        # and a queue as long as the file keeps every frame for us.
        stream = CaptureStream(
            None, sample_rate_hz=48000, period_ms=250, max_queued_frames=10**6, clock_s=time.monotonic()
        )
        frames = []
        deadline = time.monotonic() + 10
        while sum(len(f[0]) for f in frames) < 24000 and time.monotonic() < deadline:
            time.sleep(0.01)
            frames += stream.take_frames()
        stream.close()
        got = np.concatenate([f[0] for f in frames])[:24000]
        np.save(out, got)
        print(json.dumps({"indices": [f[2] for f in frames][:30]}))
    else:
        source = np.load(inp)
        stream = PlaybackStream(None, source_rate_hz=48000, clock_s=time.monotonic())
        stream.push(source)
        stream.end_of_turn()
        deadline = time.monotonic() + 10
        while stream.stats.played < len(source) and time.monotonic() < deadline:
            time.sleep(0.001)
        stats = stream.stats
        stream.close()
        print(json.dumps({"played": stats.played, "pushed": stats.pushed, "underruns": stats.underruns}))
    """
)


def run_in_alsa_sandbox(tmp_path, which: str, inp: str, out: str) -> dict:
    (tmp_path / ".asoundrc").write_text(ASOUNDRC.format(out=tmp_path / "playback.raw", inp=tmp_path / "capture.raw"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    # No PulseAudio in sight: its ALSA hook would take `default` back when a server runs.
    env["HOME"] = env["XDG_RUNTIME_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, which, inp, out], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_capture_delivers_the_file_exactly(tmp_path) -> None:
    pattern = ((np.arange(24000) * 37) % 2000 - 1000).astype("<i2")  # 0.5 s at 48 kHz
    pattern.tofile(tmp_path / "capture.raw")
    info = run_in_alsa_sandbox(tmp_path, "capture", "", str(tmp_path / "got.npy"))
    got = np.load(tmp_path / "got.npy")
    np.testing.assert_array_equal(got, pattern.astype(np.float32) / 32768)
    assert info["indices"][:3] == [0, 960, 1920], "consecutive 20 ms frames"


def test_playback_writes_exactly_what_was_pushed(tmp_path) -> None:
    source = (((np.arange(4800) * 53) % 4000 - 2000) / 32768).astype(np.float32)
    np.save(tmp_path / "source.npy", source)
    info = run_in_alsa_sandbox(tmp_path, "playback", str(tmp_path / "source.npy"), "")
    assert info["played"] == info["pushed"] == len(source)
    written = np.fromfile(tmp_path / "playback.raw", "<i2").astype(np.float32) / 32768
    start = int(np.flatnonzero(written)[0])
    first = int(np.flatnonzero(source)[0])
    np.testing.assert_array_equal(written[start : start + len(source) - first], source[first:])
    assert not written[:start].any(), "only silence before the audio"
