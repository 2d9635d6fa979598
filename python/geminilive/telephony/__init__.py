"""Telephony: phone audio to and from a Live session.

:mod:`geminilive.telephony.g711` codes the telephone network's μ-law and A-law in Rust,
bit-exact with the ITU-T reference, with resampling between 8 kHz and the Live API's rates
fused in. This subpackage imports the core; the core never imports it.
"""

from geminilive.telephony.g711 import G711Decoder, G711Encoder, Law, decode, encode

__all__ = ["G711Decoder", "G711Encoder", "Law", "decode", "encode"]
