"""PCM conversion between float32 samples and the 16-bit little-endian PCM of the Live API.

The scale is 32768 both ways: every int16 survives int16 -> float32 -> int16 exactly; floats
round half to even and clip at full scale instead of wrapping.
"""

from __future__ import annotations

from geminilive._native import f32_to_s16le, from_mono, s16le_to_f32, to_mono

__all__ = ["f32_to_s16le", "from_mono", "s16le_to_f32", "to_mono"]
