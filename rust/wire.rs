//! The per-frame hot paths of the wire protocol: 16-bit PCM straight into the JSON text of a
//! `realtimeInput` audio message, base64 included, in one pass and one allocation; and back
//! out of a message that carries one blob and nothing else (most of what the service sends),
//! without building the message's objects.

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

/// Each standard base64 character's six bits, already shifted into place for its position in
/// a group of four (`DECODE[i][c]`), or a value with bit 24 set for anything else: a group
/// decodes with four lookups and one test.
const DECODE: [[u32; 256]; 4] = {
    let mut tables = [[1 << 24; 256]; 4];
    let mut c = 0;
    while c < 64 {
        let mut i = 0;
        while i < 4 {
            tables[i][ALPHABET[c] as usize] = (c as u32) << (18 - 6 * i);
            i += 1;
        }
        c += 1;
    }
    tables
};

fn decode_group(group: &[u8]) -> u32 {
    DECODE[0][group[0] as usize]
        | DECODE[1][group[1] as usize]
        | DECODE[2][group[2] as usize]
        | DECODE[3][group[3] as usize]
}

/// Bytes the padded standard base64 text `src` decodes to, if it is that.
pub fn base64_decoded_len(src: &[u8]) -> Option<usize> {
    if src.len() % 4 != 0 {
        return None;
    }
    let padding = src.iter().rev().take(2).take_while(|&&c| c == b'=').count();
    Some(src.len() / 4 * 3 - padding)
}

/// Decode padded standard base64 into `dst` (`base64_decoded_len` long). False for anything
/// else: other characters, misplaced padding, or set bits after the last byte (the general
/// decoder then has its say).
pub fn base64_decode_into(src: &[u8], dst: &mut [u8]) -> bool {
    let Some(len) = base64_decoded_len(src) else {
        return false;
    };
    if dst.len() != len {
        return false;
    }
    let whole = if len % 3 == 0 {
        src.len()
    } else {
        src.len() - 4
    };
    let mut bad = 0u32;
    let groups = whole / 4;
    // Four bytes stored per group of three (the next group overwrites the fourth): one store
    // instead of a three-byte copy, for all but the last group.
    let wide = groups.min(len.saturating_sub(1) / 3);
    for g in 0..wide {
        let n = decode_group(&src[4 * g..4 * g + 4]);
        bad |= n;
        dst[3 * g..3 * g + 4].copy_from_slice(&(n << 8).to_be_bytes());
    }
    for g in wide..groups {
        let n = decode_group(&src[4 * g..4 * g + 4]);
        bad |= n;
        dst[3 * g..3 * g + 3].copy_from_slice(&n.to_be_bytes()[1..]);
    }
    if bad >> 24 != 0 {
        return false;
    }
    if whole < src.len() {
        let keep = len % 3; // 1 or 2 bytes in the last group, then padding
        let mut group = [b'A'; 4];
        group[..keep + 1].copy_from_slice(&src[whole..whole + keep + 1]);
        let n = decode_group(&group);
        if n >> 24 != 0 || src[whole + keep + 1..].iter().any(|&c| c != b'=') {
            return false;
        }
        let bytes = n.to_be_bytes();
        if bytes[1 + keep..].iter().any(|&x| x != 0) {
            return false; // bits past the data: not the canonical encoding
        }
        dst[len - keep..].copy_from_slice(&bytes[1..1 + keep]);
    }
    true
}

/// Index of the first `needle` in `text`, eight bytes at a time.
fn find_byte(text: &[u8], needle: u8) -> Option<usize> {
    let pattern = u64::from_le_bytes([needle; 8]);
    let mut words = text.chunks_exact(8);
    for (i, word) in (&mut words).enumerate() {
        let w = u64::from_le_bytes(word.try_into().expect("eight bytes")) ^ pattern;
        // The lowest set bit marks the first zero byte (later ones may be false alarms).
        let zero = w.wrapping_sub(0x0101_0101_0101_0101) & !w & 0x8080_8080_8080_8080;
        if zero != 0 {
            return Some(i * 8 + zero.trailing_zeros() as usize / 8);
        }
    }
    let tail = text.len() - words.remainder().len();
    words
        .remainder()
        .iter()
        .position(|&c| c == needle)
        .map(|p| tail + p)
}

/// One step of the path to the blob in [`single_blob`].
#[derive(Clone, Copy, Debug)]
pub enum Step {
    /// An object with this one key.
    Key(&'static str),
    /// An array with one element.
    Only,
}

/// A cursor over JSON text that accepts only the shapes `single_blob` wants.
struct Scan<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> Scan<'a> {
    fn skip_space(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.text.get(self.at) {
            self.at += 1;
        }
    }

    fn byte(&mut self, expected: u8) -> Option<()> {
        self.skip_space();
        (self.text.get(self.at) == Some(&expected)).then(|| self.at += 1)
    }

    /// The raw text of a string, up to the next quote. An escaped quote ends it early; the
    /// callers reject every string holding a backslash (keys must match, the mime type is
    /// checked, the data must be base64), so escapes are left to the general decoder.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.byte(b'"')?;
        let start = self.at;
        let len = find_byte(&self.text[start..], b'"')?;
        self.at = start + len + 1;
        Some(&self.text[start..start + len])
    }
}

/// The mime type and base64 data of the blob at `path` (then `{"mimeType", "data"}` in either
/// order), when `frame` is exactly that: one key per object, one element per array, no other
/// field, no escapes, only whitespace around. `None` for any other frame.
pub fn single_blob<'a>(frame: &'a [u8], path: &[Step]) -> Option<(&'a [u8], &'a [u8])> {
    let mut scan = Scan { text: frame, at: 0 };
    for step in path {
        match step {
            Step::Key(key) => {
                scan.byte(b'{')?;
                (scan.string()? == key.as_bytes()).then_some(())?;
                scan.byte(b':')?;
            }
            Step::Only => scan.byte(b'[')?,
        }
    }
    scan.byte(b'{')?;
    let (mut mime, mut data) = (None, None);
    for i in 0..2 {
        if i == 1 {
            scan.byte(b',')?;
        }
        let key = scan.string()?;
        scan.byte(b':')?;
        let value = scan.string()?;
        let slot = match key {
            b"mimeType" => &mut mime,
            b"data" => &mut data,
            _ => return None,
        };
        slot.replace(value).is_none().then_some(())?;
    }
    scan.byte(b'}')?;
    for step in path.iter().rev() {
        scan.byte(match step {
            Step::Key(_) => b'}',
            Step::Only => b']',
        })?;
    }
    scan.skip_space();
    let mime = mime.filter(|m| m.iter().all(|&c| c >= 0x20 && c != b'\\'))?;
    (scan.at == frame.len()).then_some((mime, data?))
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
    fn base64_decodes_what_it_encodes_and_refuses_the_rest() {
        for len in 0..40 {
            let src: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = b64(&src);
            let mut out = vec![0u8; base64_decoded_len(text.as_bytes()).unwrap()];
            assert!(base64_decode_into(text.as_bytes(), &mut out), "{text}");
            assert_eq!(out, src);
        }
        for bad in [
            "Zg=", "Zh==", "Zm9=", "Z===", "Zm-v", "Zm_v", "Zm9v\n", "=Zm9", "Zg==Zg==",
        ] {
            let ok = base64_decoded_len(bad.as_bytes())
                .is_some_and(|len| base64_decode_into(bad.as_bytes(), &mut vec![0u8; len]));
            assert!(!ok, "{bad}");
        }
    }

    #[test]
    fn find_byte_finds_the_first() {
        for len in 0..40 {
            for at in 0..=len {
                let mut text = vec![b'#'; len];
                text.extend_from_slice(b"\"x\"");
                text.insert(at, b'"');
                assert_eq!(find_byte(&text, b'"'), Some(at));
            }
            assert_eq!(find_byte(&vec![b'!'; len], b'"'), None);
        }
    }

    #[test]
    fn single_blob_takes_exactly_the_one_shape() {
        let path = [Step::Key("a"), Step::Key("b"), Step::Only, Step::Key("c")];
        let good =
            br#" { "a" : {"b":[ {"c": {"data":"Zm9v","mimeType":"audio/pcm;rate=24000"} } ]}}
"#;
        assert_eq!(
            single_blob(good, &path),
            Some((&b"audio/pcm;rate=24000"[..], &b"Zm9v"[..]))
        );
        for bad in [
            &br#"{"a":{"b":[{"c":{"data":"Zm9v"}}]}}"#[..],
            br#"{"a":{"b":[{"c":{"data":"Zm9v","mimeType":"x","data":"Zm9v"}}]}}"#,
            br#"{"a":{"b":[{"c":{"data":"Zm9v","mimeType":"x"}}],"d":1}}"#,
            br#"{"a":{"b":[{"c":{"data":"Zm9v","mimeType":"x"}},{}]}}"#,
            br#"{"a":{"b":[{"c":{"data":"Zm9v","mimeType":"x\"y"}}]}}"#,
            br#"{"a":{"b":[{"c":{"data":"Zm9v","mimeType":"x"}}]}} x"#,
            br#"{"a":{"b":[{"c":{"data":"Zm9v","mimeType":"x"}}]}"#,
            br#"{"A":{"b":[{"c":{"data":"Zm9v","mimeType":"x"}}]}}"#,
        ] {
            assert_eq!(
                single_blob(bad, &path),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn frames_wrap_the_base64() {
        let mut dst = vec![0u8; framed_len(b"<", 3, b">")];
        frame_into(b"<", b"foo", b">", &mut dst);
        assert_eq!(dst, b"<Zm9v>");
    }
}
