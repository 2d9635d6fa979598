"""G.711 in Rust: μ-law ("mulaw", Twilio's ``audio/x-mulaw``) and A-law ("alaw").

    codes = encode(pcm16)                     # 16-bit little-endian PCM -> one byte a sample
    pcm16 = decode(codes)

    caller = G711Decoder("mulaw", output_rate_hz=16000)   # 8 kHz codes -> 16 kHz PCM for the session
    to_phone = G711Encoder("mulaw", input_rate_hz=24000)  # the model's 24 kHz PCM -> 8 kHz codes

The fused classes keep the resampler's state across calls (any chunking gives the same bytes)
and filter properly: aliases of what the model says above 4 kHz stay over 130 dB down, where
linear interpolation from 24 kHz folds sibilants back into the band (the "metallic" sound).
"""

from __future__ import annotations

from typing import Literal

from geminilive._native import G711Decoder, G711Encoder, g711_decode, g711_encode

__all__ = ["G711Decoder", "G711Encoder", "Law", "decode", "encode"]

Law = Literal["mulaw", "alaw"]


def encode(pcm: bytes | bytearray | memoryview, law: Law = "mulaw") -> bytes:
    """G.711 codes of 16-bit little-endian PCM (``AudioFormatError`` for an odd byte count)."""
    return g711_encode(pcm, law)


def decode(codes: bytes | bytearray | memoryview, law: Law = "mulaw") -> bytes:
    """16-bit little-endian PCM of G.711 codes."""
    return g711_decode(codes, law)
