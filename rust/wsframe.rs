//! RFC 6455 data frames on the hot path: a whole message in one frame, built (masked, for a
//! client) or read (unmasked, for a server) in one pass. Everything else, control frames,
//! fragments, extensions, anything malformed, is left to websockets' sans-I/O protocol, which
//! the Python connection hands exactly those frames (see `geminilive/_websocket.py`).

use std::cell::RefCell;

/// Text and binary opcodes: the only frames read or built here.
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;

/// What the reader found at an offset of the received bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A whole message in one frame: its payload is `payload`, the frame ends at `end`.
    Message {
        payload: std::ops::Range<usize>,
        mask: Option<[u8; 4]>,
        end: usize,
    },
    /// A complete frame of another kind (control, fragment, extension bits) ending at `end`:
    /// for the general protocol.
    Other { end: usize },
    /// A header the general protocol must judge (too large, wrong masking, bad length): give
    /// it everything from here on.
    Refuse,
    /// Not a whole frame yet: `need` bytes from the offset make it whole (0 until its header
    /// is in).
    Incomplete { need: usize },
}

/// Reads the frame header at `at`. `masked`: whether frames from the peer must be masked
/// (a server reading a client); `max_size`: the largest payload accepted; `simple`: whether a
/// single-frame message may be taken here (not while a fragmented message is in progress).
pub fn next_frame(buf: &[u8], at: usize, masked: bool, max_size: usize, simple: bool) -> Next {
    let rest = &buf[at..];
    if rest.len() < 2 {
        return Next::Incomplete { need: 0 };
    }
    let (b0, b1) = (rest[0], rest[1]);
    if (b1 & 0x80 != 0) != masked {
        return Next::Refuse;
    }
    let (len, mut header) = match b1 & 0x7f {
        126 if rest.len() < 4 => return Next::Incomplete { need: 0 },
        126 => (u64::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
        127 if rest.len() < 10 => return Next::Incomplete { need: 0 },
        127 => (
            u64::from_be_bytes(rest[2..10].try_into().expect("8 bytes")),
            10,
        ),
        short => (u64::from(short), 2),
    };
    if len > max_size as u64 {
        return Next::Refuse;
    }
    let mask = if masked {
        if rest.len() < header + 4 {
            return Next::Incomplete { need: 0 };
        }
        let key: [u8; 4] = rest[header..header + 4].try_into().expect("4 bytes");
        header += 4;
        Some(key)
    } else {
        None
    };
    let len = len as usize;
    if rest.len() - header < len {
        return Next::Incomplete { need: header + len };
    }
    let end = at + header + len;
    let opcode = b0 & 0x0f;
    let fin_no_rsv = b0 & 0xf0 == 0x80;
    if simple && fin_no_rsv && (opcode == OP_TEXT || opcode == OP_BINARY) {
        Next::Message {
            payload: at + header..end,
            mask,
            end,
        }
    } else {
        Next::Other { end }
    }
}

/// `src` XOR the repeated `key`, into `dst` (the same length).
pub fn unmask_into(src: &[u8], key: [u8; 4], dst: &mut [u8]) {
    let wide = u64::from(u32::from_ne_bytes(key)) * 0x1_0000_0001;
    let mut s = src.chunks_exact(8);
    let mut d = dst.chunks_exact_mut(8);
    for (si, di) in (&mut s).zip(&mut d) {
        let v = u64::from_ne_bytes(si.try_into().expect("8 bytes")) ^ wide;
        di.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, (si, di)) in s.remainder().iter().zip(d.into_remainder()).enumerate() {
        *di = si ^ key[i % 4];
    }
}

/// Length of the frame [`frame_into`] builds around `payload_len` bytes.
pub fn frame_len(payload_len: usize, masked: bool) -> usize {
    let header = match payload_len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    };
    header + if masked { 4 } else { 0 } + payload_len
}

/// A final frame with `opcode` around `payload` into `dst` (sized by [`frame_len`]), masked
/// with `mask` when given (clients must mask; servers must not).
pub fn frame_into(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>, dst: &mut [u8]) {
    let n = payload.len();
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    dst[0] = 0x80 | opcode;
    let mut at = match n {
        0..=125 => {
            dst[1] = mask_bit | n as u8;
            2
        }
        126..=65535 => {
            dst[1] = mask_bit | 126;
            dst[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            4
        }
        _ => {
            dst[1] = mask_bit | 127;
            dst[2..10].copy_from_slice(&(n as u64).to_be_bytes());
            10
        }
    };
    match mask {
        Some(key) => {
            dst[at..at + 4].copy_from_slice(&key);
            at += 4;
            unmask_into(payload, key, &mut dst[at..]);
        }
        None => dst[at..].copy_from_slice(payload),
    }
}

/// Masking keys from the operating system's random source, drawn 4 KiB at a time: RFC 6455
/// wants them unpredictable, and one system call per frame cost more than the frame.
pub fn mask_key() -> [u8; 4] {
    thread_local! {
        static POOL: RefCell<([u8; 4096], usize)> = const { RefCell::new(([0; 4096], 4096)) };
    }
    POOL.with(|pool| {
        let (bytes, used) = &mut *pool.borrow_mut();
        if *used == bytes.len() {
            getrandom::fill(bytes).expect("the operating system's random source failed");
            *used = 0;
        }
        let key = bytes[*used..*used + 4].try_into().expect("4 bytes");
        *used += 4;
        key
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![0; frame_len(payload.len(), mask.is_some())];
        frame_into(opcode, payload, mask, &mut out);
        out
    }

    fn read_message(buf: &[u8], masked: bool) -> (Vec<u8>, usize) {
        match next_frame(buf, 0, masked, usize::MAX, true) {
            Next::Message { payload, mask, end } => {
                let mut out = vec![0; payload.len()];
                match mask {
                    Some(key) => unmask_into(&buf[payload], key, &mut out),
                    None => out.copy_from_slice(&buf[payload]),
                }
                (out, end)
            }
            other => panic!("not a message: {other:?}"),
        }
    }

    #[test]
    fn round_trips_every_length_class_masked_and_not() {
        for len in [0, 1, 7, 8, 9, 125, 126, 127, 1000, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            for mask in [None, Some([0x12, 0x34, 0x56, 0x78])] {
                let built = frame(OP_BINARY, &payload, mask);
                assert_eq!(built.len(), frame_len(len, mask.is_some()));
                let (read, end) = read_message(&built, mask.is_some());
                assert_eq!((read, end), (payload.clone(), built.len()), "len {len}");
            }
        }
    }

    #[test]
    fn matches_the_rfc_examples() {
        // RFC 6455 §5.7: an unmasked and a masked "Hello" text frame.
        assert_eq!(
            frame(OP_TEXT, b"Hello", None),
            b"\x81\x05\x48\x65\x6c\x6c\x6f"
        );
        assert_eq!(
            frame(OP_TEXT, b"Hello", Some([0x37, 0xfa, 0x21, 0x3d])),
            b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
        );
    }

    #[test]
    fn leaves_every_other_frame_to_the_general_protocol() {
        let ping = b"\x89\x02hi";
        assert_eq!(
            next_frame(ping, 0, false, 100, true),
            Next::Other { end: 4 }
        );
        let fragment = b"\x01\x02hi"; // text without FIN
        assert_eq!(
            next_frame(fragment, 0, false, 100, true),
            Next::Other { end: 4 }
        );
        let compressed = b"\xc1\x02hi"; // RSV1: permessage-deflate
        assert_eq!(
            next_frame(compressed, 0, false, 100, true),
            Next::Other { end: 4 }
        );
        let text = b"\x81\x02hi";
        assert_eq!(
            next_frame(text, 0, false, 100, false),
            Next::Other { end: 4 }
        );
        assert_eq!(next_frame(text, 0, true, 100, true), Next::Refuse); // must be masked
        assert_eq!(next_frame(text, 0, false, 1, true), Next::Refuse); // too large
        assert_eq!(
            next_frame(&text[..3], 0, false, 100, true),
            Next::Incomplete { need: 4 }
        );
        let header_only = b"\x81\x7e\x01";
        assert_eq!(
            next_frame(header_only, 0, false, 1000, true),
            Next::Incomplete { need: 0 }
        );
    }

    #[test]
    fn finds_frames_one_after_another() {
        let mut stream = frame(OP_TEXT, b"one", None);
        stream.extend(frame(OP_BINARY, &[9; 300], None));
        let Next::Message { end, .. } = next_frame(&stream, 0, false, 1000, true) else {
            panic!()
        };
        let Next::Message {
            payload, end: last, ..
        } = next_frame(&stream, end, false, 1000, true)
        else {
            panic!()
        };
        assert_eq!((&stream[payload], last), (&[9u8; 300][..], stream.len()));
    }

    #[test]
    fn mask_keys_differ() {
        let keys: std::collections::HashSet<[u8; 4]> = (0..3000).map(|_| mask_key()).collect();
        assert!(keys.len() > 2990, "{} distinct of 3000", keys.len());
    }
}
