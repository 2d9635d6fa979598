//! The per-frame hot path of the wire protocol: 16-bit PCM straight into the JSON text of a
//! `realtimeInput` audio message, base64 included, in one pass and one allocation.

/// The standard base64 alphabet (what the service sends and the docs use).
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Length of the padded base64 text of `len` bytes.
pub fn base64_len(len: usize) -> usize {
    len.div_ceil(3) * 4
}

/// Standard, padded base64 of `src` into `dst` (exactly `base64_len(src.len())` bytes).
///
/// # Panics
/// When `dst` has the wrong length (a caller bug).
pub fn base64_into(src: &[u8], dst: &mut [u8]) {
    assert_eq!(dst.len(), base64_len(src.len()));
    let mut chunks = src.chunks_exact(3);
    let mut out = dst.chunks_exact_mut(4);
    for (group, o) in (&mut chunks).zip(&mut out) {
        let n = u32::from(group[0]) << 16 | u32::from(group[1]) << 8 | u32::from(group[2]);
        o[0] = ALPHABET[(n >> 18) as usize & 63];
        o[1] = ALPHABET[(n >> 12) as usize & 63];
        o[2] = ALPHABET[(n >> 6) as usize & 63];
        o[3] = ALPHABET[n as usize & 63];
    }
    let rest = chunks.remainder();
    if let Some(o) = out.next() {
        let n = u32::from(rest[0]) << 16 | rest.get(1).map_or(0, |b| u32::from(*b) << 8);
        o[0] = ALPHABET[(n >> 18) as usize & 63];
        o[1] = ALPHABET[(n >> 12) as usize & 63];
        o[2] = if rest.len() == 2 {
            ALPHABET[(n >> 6) as usize & 63]
        } else {
            b'='
        };
        o[3] = b'=';
    }
}

/// `prefix`, the base64 of `pcm`, then `suffix`, into `dst` (sized by [`framed_len`]).
pub fn frame_into(prefix: &[u8], pcm: &[u8], suffix: &[u8], dst: &mut [u8]) {
    let (head, rest) = dst.split_at_mut(prefix.len());
    head.copy_from_slice(prefix);
    let (body, tail) = rest.split_at_mut(base64_len(pcm.len()));
    base64_into(pcm, body);
    tail.copy_from_slice(suffix);
}

/// Total length of a frame built by [`frame_into`].
pub fn framed_len(prefix: &[u8], pcm_len: usize, suffix: &[u8]) -> usize {
    prefix.len() + base64_len(pcm_len) + suffix.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(src: &[u8]) -> String {
        let mut out = vec![0u8; base64_len(src.len())];
        base64_into(src, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn matches_the_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(b64(plain.as_bytes()), encoded);
        }
        assert_eq!(b64(&[0xfb, 0xff, 0xfe]), "+//+");
    }

    #[test]
    fn frames_wrap_the_base64() {
        let mut dst = vec![0u8; framed_len(b"<", 3, b">")];
        frame_into(b"<", b"foo", b">", &mut dst);
        assert_eq!(dst, b"<Zm9v>");
    }
}
