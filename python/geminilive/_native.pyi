"""Type stub for the Rust extension. Import these names from `geminilive`, not from here."""

from typing import Literal, final

__all__ = [
    "CaptureStream",
    "EchoCanceller",
    "EchoReference",
    "G711Decoder",
    "G711Encoder",
    "InputChunker",
    "PlaybackStream",
    "PlayoutBuffer",
    "PlayoutStats",
    "Resampler",
    "TlsServerConfig",
    "TlsStream",
    "VoiceActivityDetector",
    "__version__",
    "audio_frame",
    "f32_to_s16le",
    "from_mono",
    "g711_decode",
    "g711_encode",
    "input_audio",
    "list_devices",
    "model_audio",
    "read_frames",
    "s16le_to_f32",
    "to_mono",
    "write_frame",
]

import numpy as np
import numpy.typing as npt

__version__: str

_F32 = npt.NDArray[np.float32]
_Audio = npt.NDArray[np.float32] | npt.NDArray[np.int16]
_Pcm16 = bytes | bytearray | memoryview | npt.NDArray[np.int16]

def f32_to_s16le(samples: _F32) -> bytes:
    """Encode float32 samples as 16-bit little-endian PCM (round half to even, clip).

    Raises:
        AudioFormatError: not float32, or not C-contiguous.
    """

def s16le_to_f32(data: _Pcm16) -> _F32:
    """Decode 16-bit little-endian PCM into float32 samples in [-1, 1).

    Raises:
        AudioFormatError: an odd number of bytes, or a type that is not PCM.
    """

def to_mono(samples: _Audio, channels: int | None = None) -> _F32:
    """Average the channels of a (frames, channels) array, or of interleaved 1-D samples."""

def from_mono(samples: _Audio, channels: int) -> _F32:
    """Copy mono samples into every channel of a (frames, channels) array."""

@final
class Resampler:
    """Streaming sample-rate converter (8-192 kHz): any chunking gives bit-identical output.

    The pass band is flat to 0.9 of the lower Nyquist frequency (within 0.02 dB) and aliases
    and images are rejected by about 138 dB. Output is aligned with the input; `delay_samples` outputs
    are withheld until later input arrives, and `flush()` releases them.
    """

    def __new__(cls, input_rate_hz: int, output_rate_hz: int, channels: int = 1) -> Resampler: ...
    def process(self, samples: _Audio) -> _F32:
        """Resample a chunk: 1-D for mono, (frames, channels) otherwise. Float32 out."""
    def flush(self) -> _F32:
        """Return the withheld tail and reset for a new stream."""
    def reset(self) -> None:
        """Forget all history."""
    @property
    def input_rate_hz(self) -> int: ...
    @property
    def output_rate_hz(self) -> int: ...
    @property
    def channels(self) -> int: ...
    @property
    def taps(self) -> int:
        """Multiply-adds per output sample over all stages (a folded pair of taps counts once)."""
    @property
    def delay_samples(self) -> int:
        """Latency in output samples (rounded up)."""
    @property
    def delay_ms(self) -> float:
        """Latency in milliseconds."""

@final
class PlayoutStats:
    """A snapshot of a playout buffer's counters (all in samples)."""

    depth: int
    underruns: int
    played: int
    discarded: int
    silence: int
    threshold: int
    pushed: int
    sample_rate_hz: int
    @property
    def depth_ms(self) -> float: ...
    @property
    def threshold_ms(self) -> float: ...

@final
class PlayoutBuffer:
    """Lock-free playout buffer between received audio and the audio callback.

    Holds minutes of audio, prebuffers `prebuffer_ms` before starting (raised after underruns,
    decaying back), plays a turn's tail in full after `end_of_turn()`, and `clear()`s within
    one callback period with a short fade.
    """

    def __new__(
        cls,
        sample_rate_hz: int,
        *,
        capacity_s: float = 300.0,
        prebuffer_ms: float = 40.0,
        max_prebuffer_ms: float = 400.0,
        fade_ms: float = 2.5,
    ) -> PlayoutBuffer: ...
    def push(self, pcm: _Pcm16 | _F32) -> None:
        """Queue audio, all or nothing.

        Raises:
            BufferFullError: it does not fit; nothing was written.
            AudioFormatError: odd byte count or unsupported type.
        """
    def pull(self, frames: int) -> _F32:
        """The next `frames` samples (silence where nothing is playable)."""
    def end_of_turn(self) -> None:
        """Mark the end of a turn: what is queued plays out in full."""
    def clear(self) -> int:
        """Drop everything queued (barge-in); returns the samples that will not play in full."""
    def set_gain(self, gain: float) -> None:
        """Scale what plays (0..=1, ramped over about 10 ms); ValueError outside."""
    @property
    def gain(self) -> float: ...
    @property
    def free(self) -> int: ...
    @property
    def sample_rate_hz(self) -> int: ...
    @property
    def stats(self) -> PlayoutStats: ...

@final
class EchoCanceller:
    """WebRTC's AEC3 (mono, 16/32/48 kHz): takes what the speaker played out of what the
    microphone heard, finding the delay between them itself. Any chunk length: whole 10 ms
    frames are processed, the rest waits, so chunking never changes the output."""

    def __new__(cls, sample_rate_hz: int = 16000) -> EchoCanceller: ...
    def render(self, samples: _Audio) -> None:
        """What the speaker played, at the canceller's rate."""
    def process(self, samples: _Audio) -> _F32:
        """What the microphone heard; the echo-free samples of every whole frame so far."""
    @property
    def sample_rate_hz(self) -> int: ...
    @property
    def pending(self) -> int: ...

@final
class VoiceActivityDetector:
    """Streaming energy VAD in 10 ms frames (the emulator's server VAD, the client's barge-in).

    Start is committed after `prefix_padding_ms` of speech and dated to its first frame; end
    after `silence_duration_ms` of silence, dated to the first silent frame.
    """

    def __new__(
        cls,
        sample_rate_hz: int = 16000,
        *,
        start_sensitivity: str = "HIGH",
        end_sensitivity: str = "HIGH",
        prefix_padding_ms: int = 20,
        silence_duration_ms: int = 500,
    ) -> VoiceActivityDetector: ...
    def process(self, samples: _Audio | _Pcm16) -> list[tuple[str, int]]:
        """Feed audio; returns ("start" | "end", sample_index) per completed event."""
    def reset(self) -> None: ...
    @property
    def speaking(self) -> bool: ...
    @property
    def position(self) -> int: ...

@final
class InputChunker:
    """Message boundaries for the user's 16-bit mono audio: `chunk_ms` messages around turn
    changes, up to `steady_chunk_ms` within speech that has gone on for `settle_ms` and within
    a silence of `long_silence_ms` (fewer socket writes where no latency is at stake). The
    first quiet frame of speech, or voiced frame of a long silence, sends what is held at once.
    The messages, concatenated, are the input, whatever its chunking.
    """

    def __new__(
        cls,
        sample_rate_hz: int = 16000,
        chunk_ms: int = 20,
        steady_chunk_ms: int = 100,
        *,
        settle_ms: int = 300,
        long_silence_ms: int = 2000,
        pause_ms: int = 200,
    ) -> InputChunker: ...
    def push(self, pcm: _Pcm16) -> bytes | None:
        """Take in 16-bit PCM; returns the message to send now (what was held, this included),
        or None while it is held."""
    def take(self) -> bytes:
        """Everything held, now (frames stopped coming, the rate changes, the stream ends)."""
    @property
    def held_ms(self) -> float:
        """Milliseconds of audio held."""
    @property
    def limit_ms(self) -> int:
        """How long the audio held now may grow before it goes (ms)."""
    @property
    def steady(self) -> bool: ...
    @property
    def sample_rate_hz(self) -> int: ...

def audio_frame(prefix: bytes, pcm: bytes, suffix: bytes) -> bytes:
    """`prefix + base64(pcm) + suffix` in one pass: the realtimeInput audio frame."""

def model_audio(frame: object) -> tuple[str, bytes] | None:
    """`(mime_type, data)` of a server frame that carries one model-turn blob and nothing else;
    `None` for any other frame (the general decoder reads those)."""

def input_audio(frame: object) -> tuple[str, bytes] | None:
    """`(mime_type, data)` of a client frame that is one `realtimeInput` audio blob and nothing
    else; `None` for any other frame (the general decoder reads those)."""

def read_frames(buf: bytes, at: int, masked: bool, max_size: int, simple: bool) -> tuple[list[bytes], int, int]:
    """The single-frame WebSocket messages at the front of `buf[at:]`: `(messages, offset,
    stop)`. `stop` > 0: the frame at `offset` ends there and is for the general protocol; -1:
    the general protocol takes everything from `offset`; 0 or below -1: the rest is an
    incomplete frame (of -stop bytes, once its header is in)."""

def write_frame(opcode: int, payload: bytes, masked: bool) -> bytes:
    """One final WebSocket frame (opcode 1 text, 2 binary), masked with a fresh random key when
    `masked`."""

@final
class TlsServerConfig:
    """What a TLS server presents, parsed once for every connection it accepts."""

    def __new__(cls, cert_chain: bytes, key: bytes) -> TlsServerConfig:
        """``cert_chain``: PEM, the server's certificate then its issuers'; ``key``: PEM."""

@final
class TlsStream:
    """A TLS connection (rustls) over a connected TCP socket handed over by
    ``socket.detach()`` (see ``geminilive._tls``): a client (the constructor) or a server's
    side (``accept``). TLS failures raise ``ssl.SSLError`` (a certificate not trusted for the
    name: ``ssl.SSLCertVerificationError``), socket failures their ``OSError``."""

    def __new__(cls, fd: int, server_name: str) -> TlsStream:
        """A client of ``server_name``, trusting the system's CA certificates."""

    @staticmethod
    def accept(fd: int, config: TlsServerConfig) -> TlsStream:
        """The server's side of a connection a client made on ``fd``."""

    def handshake(self) -> Literal["done", "read", "write"]:
        """Advance the handshake; what to wait for next."""

    def write(self, data: bytes | bytearray | memoryview) -> bool:
        """Encrypt and write; True when nothing is left unsent."""

    def flush(self) -> bool:
        """Write what is left; True when all of it went."""

    @property
    def unsent(self) -> int:
        """Plaintext bytes not yet all written."""

    def read(self) -> tuple[bytes, bool]:
        """What the socket holds, decrypted, and whether the stream is still open."""

    def close(self, graceful: bool) -> None:
        """Close the socket, after a close_notify when ``graceful``."""

    def fileno(self) -> int: ...

def list_devices() -> list[dict[str, object]]:
    """Devices of the default audio host (see `geminilive.devices.list_devices`)."""

@final
class EchoReference:
    """What a PlaybackStream plays, for one CaptureStream's echo canceller."""

@final
class CaptureStream:
    """A running cpal input stream: mono float32 frames at `sample_rate_hz`, resampled in Rust.

    A worker thread (never the audio callback) cuts frames and writes a byte to the socket
    `fileno()` per frame, so asyncio can wait with `loop.add_reader`.
    """

    def __new__(
        cls,
        device: str | None = None,
        *,
        sample_rate_hz: int = 16000,
        frame_ms: int = 20,
        period_ms: int = 10,
        clock_s: float = 0.0,
        max_queued_frames: int = 500,
        echo_reference: EchoReference | None = None,
    ) -> CaptureStream: ...
    def wait_for_frames(self, timeout_s: float) -> bool:
        """Wait without the GIL for frames (for loops that cannot watch `fileno()`)."""
    def release_waiters(self) -> None: ...
    def fileno(self) -> int:
        """Unix only."""
    def drain_wakeups(self) -> int:
        """Unix only."""
    def take_frames(self) -> list[tuple[_F32, float, int]]:
        """(samples, time the callback delivered the frame on the `clock_s` clock, index)."""
    @property
    def stats(self) -> dict[str, int]:
        """callbacks, overruns, dropped_frames, frames, xruns, stream_errors."""
    @property
    def first_stream_error(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def device_rate_hz(self) -> int: ...
    @property
    def device_channels(self) -> int: ...
    def close(self) -> None: ...

@final
class PlaybackStream:
    """A running cpal output stream fed by a lock-free playout buffer at the device rate."""

    def __new__(
        cls,
        device: str | None = None,
        *,
        source_rate_hz: int = 24000,
        period_ms: int = 10,
        prebuffer_ms: int = 40,
        clock_s: float = 0.0,
    ) -> PlaybackStream: ...
    def push(self, pcm: _Pcm16 | _F32) -> None:
        """Queue audio at the source rate (resampled in Rust). All or nothing."""
    def end_of_turn(self) -> None: ...
    def clear(self) -> int:
        """Silence within one device period; returns the device samples dropped."""
    def set_gain(self, gain: float) -> None:
        """Scale what plays (0..=1, ramped over about 10 ms); ValueError outside."""
    @property
    def gain(self) -> float: ...
    def echo_reference(self) -> EchoReference:
        """What this stream plays from now on, for one CaptureStream (once)."""
    @property
    def stats(self) -> PlayoutStats: ...
    @property
    def callbacks(self) -> int: ...
    @property
    def xruns(self) -> int: ...
    @property
    def stream_errors(self) -> int: ...
    @property
    def first_stream_error(self) -> str | None: ...
    @property
    def last_callback_s(self) -> float: ...
    @property
    def error(self) -> str | None: ...
    @property
    def device_rate_hz(self) -> int: ...
    @property
    def device_channels(self) -> int: ...
    @property
    def period_frames(self) -> int: ...
    def close(self) -> None: ...

def g711_encode(pcm: bytes | bytearray | memoryview | npt.NDArray[np.int16], law: str) -> bytes:
    """G.711 codes ("mulaw" or "alaw") of 16-bit little-endian PCM."""

def g711_decode(codes: bytes | bytearray | memoryview, law: str) -> bytes:
    """16-bit little-endian PCM of G.711 codes."""

@final
class G711Decoder:
    """8 kHz G.711 codes to 16-bit PCM at `output_rate_hz` (resampled, state kept)."""

    def __new__(cls, law: str, output_rate_hz: int = 16000) -> G711Decoder: ...
    def process(self, codes: bytes | bytearray | memoryview) -> bytes: ...
    def flush(self) -> bytes: ...
    @property
    def delay_ms(self) -> float: ...

@final
class G711Encoder:
    """16-bit PCM at `input_rate_hz` to 8 kHz G.711 codes (anti-aliased, state kept)."""

    def __new__(cls, law: str, input_rate_hz: int = 24000) -> G711Encoder: ...
    def process(self, pcm: bytes | bytearray | memoryview | npt.NDArray[np.int16]) -> bytes: ...
    def flush(self) -> bytes: ...
    @property
    def delay_ms(self) -> float: ...
