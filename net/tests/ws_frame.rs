//! Table-driven tests of the WebSocket frame parser, message assembler and frame writers: every
//! frame shape and length encoding, every protocol rule with its close code, the RFC 6455 §5.7
//! examples, incremental parsing at every split, and a deterministic fuzz loop.

mod common;

use common::Rng;
use pinion_net::ws::{
    Assembler, CLOSE_REASON_BYTES_MAX, CONTROL_PAYLOAD_BYTES_MAX, Error, FRAME_HEADER_BYTES_MAX,
    Limits, Message, Opcode, Progress, Role, is_valid_close_code, parse_close_payload, parse_frame,
    parse_header, write_binary, write_close, write_frame, write_frame_masked, write_ping,
    write_pong, write_text,
};

/// The masking key of the RFC 6455 §5.7 examples.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

// ---------------------------------------------------------------------------------------------
// Raw frame builders, independent of the writers under test.

/// A frame with first byte `b0`, the minimal length encoding, and the payload masked with `mask`
/// when given.
fn raw(b0: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut length: Vec<u8> = if len < 126 {
        vec![len as u8]
    } else if len <= 0xFFFF {
        let mut v = vec![126];
        v.extend_from_slice(&(len as u16).to_be_bytes());
        v
    } else {
        let mut v = vec![127];
        v.extend_from_slice(&(len as u64).to_be_bytes());
        v
    };
    raw_len(b0, &mut length, mask, payload)
}

/// A frame with first byte `b0` and the given length bytes (7-bit length plus any extended
/// length, exactly as they go on the wire, without the mask bit), so non-minimal and bogus
/// encodings can be built.
fn raw_len(b0: u8, length: &mut [u8], mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![b0];
    if mask.is_some() {
        length[0] |= 0x80;
    }
    v.extend_from_slice(length);
    match mask {
        Some(m) => {
            v.extend_from_slice(&m);
            v.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => v.extend_from_slice(payload),
    }
    v
}

/// A client frame (masked) with the given length bytes; see [`raw_len`].
fn client_len(b0: u8, length: &mut [u8], payload: &[u8]) -> Vec<u8> {
    raw_len(b0, length, Some(MASK), payload)
}

/// A frame from a client (masked), the usual input of a server.
fn client(b0: u8, payload: &[u8]) -> Vec<u8> {
    raw(b0, Some(MASK), payload)
}

/// First bytes: FIN plus opcode.
const TEXT: u8 = 0x81;
const BINARY: u8 = 0x82;
const CLOSE: u8 = 0x88;
const PING: u8 = 0x89;
const PONG: u8 = 0x8A;
/// Non-final first fragments and continuations.
const TEXT_FIRST: u8 = 0x01;
const BINARY_FIRST: u8 = 0x02;
const CONT: u8 = 0x00;
const CONT_FINAL: u8 = 0x80;

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut v = code.to_be_bytes().to_vec();
    v.extend_from_slice(reason);
    v
}

// ---------------------------------------------------------------------------------------------
// Frame-level parsing.

/// An owned copy of a parsed frame.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Owned {
    fin: bool,
    opcode: Opcode,
    payload: Vec<u8>,
    len: usize,
}

/// What parsing one frame gave, owned.
type Parsed = Result<Progress<Owned>, Error>;

fn parse(input: &[u8], limits: &Limits, role: Role) -> Parsed {
    let mut buf = input.to_vec();
    Ok(match parse_frame(&mut buf, limits, role)? {
        Progress::Partial => Progress::Partial,
        Progress::Complete(f) => Progress::Complete(Owned {
            fin: f.fin,
            opcode: f.opcode,
            payload: f.payload.to_vec(),
            len: f.len,
        }),
    })
}

/// Parses `input` whole, then checks that every proper prefix is `Partial` (for a valid frame)
/// or `Partial`/the same error (for an invalid one), that trailing bytes change nothing, and
/// that `parse_header` agrees. Returns the whole-input result.
fn parse_everywhere(input: &[u8], limits: &Limits, role: Role) -> Parsed {
    let whole = parse(input, limits, role);
    for k in 0..input.len() {
        let prefix = parse(&input[..k], limits, role);
        match (&whole, &prefix) {
            (_, Ok(Progress::Partial)) => {}
            (Err(e), Err(p)) if e == p => {}
            _ => panic!("prefix {k} of {input:02x?}: {prefix:?}, whole: {whole:?}"),
        }
    }
    let mut longer = input.to_vec();
    longer.extend_from_slice(&[0xFF, 0x00, 0x81]);
    let extended = parse(&longer, limits, role);
    if let Ok(Progress::Complete(_)) = &whole {
        assert_eq!(extended, whole, "trailing bytes changed {input:02x?}");
    }
    if let Err(e) = &whole {
        // A longer input can only fail the same way (or complete differently if the frame
        // itself was incomplete, which `whole` being an error rules out).
        assert_eq!(extended.as_ref().err(), Some(e));
    }
    match (&whole, parse_header(input, limits, role)) {
        (Ok(Progress::Complete(f)), Ok(Progress::Complete(h))) => {
            assert_eq!((h.fin, h.opcode, h.frame_len()), (f.fin, f.opcode, f.len));
            assert_eq!(h.payload_len, f.payload.len());
        }
        (Ok(Progress::Partial), Ok(_)) => {}
        (Err(e), Err(h)) => assert_eq!(*e, h),
        // Close payload errors are only known once the payload is there.
        (Err(Error::InvalidCloseCode | Error::InvalidCloseReason), Ok(Progress::Complete(_))) => {}
        (w, h) => panic!("parse_header disagrees on {input:02x?}: {h:?} vs {w:?}"),
    }
    whole
}

fn complete(fin: bool, opcode: Opcode, payload: &[u8], len: usize) -> Parsed {
    Ok(Progress::Complete(Owned {
        fin,
        opcode,
        payload: payload.to_vec(),
        len,
    }))
}

#[test]
fn rfc_6455_section_5_7_examples() {
    let l = Limits::default();
    let hello = b"Hello";
    // A single-frame unmasked text message (what a client reads).
    let unmasked = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    assert_eq!(
        parse_everywhere(&unmasked, &l, Role::Client),
        complete(true, Opcode::Text, hello, 7)
    );
    assert_eq!(parse(&unmasked, &l, Role::Server), Err(Error::Unmasked));
    // A single-frame masked text message (what a server reads).
    let masked = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    assert_eq!(
        parse_everywhere(&masked, &l, Role::Server),
        complete(true, Opcode::Text, hello, 11)
    );
    assert_eq!(parse(&masked, &l, Role::Client), Err(Error::Masked));
    // A fragmented unmasked text message.
    let first = [0x01, 0x03, 0x48, 0x65, 0x6c];
    let second = [0x80, 0x02, 0x6c, 0x6f];
    assert_eq!(
        parse_everywhere(&first, &l, Role::Client),
        complete(false, Opcode::Text, b"Hel", 5)
    );
    assert_eq!(
        parse_everywhere(&second, &l, Role::Client),
        complete(true, Opcode::Continuation, b"lo", 4)
    );
    // Unmasked ping, masked pong.
    let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    assert_eq!(
        parse_everywhere(&ping, &l, Role::Client),
        complete(true, Opcode::Ping, hello, 7)
    );
    let pong = [
        0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    assert_eq!(
        parse_everywhere(&pong, &l, Role::Server),
        complete(true, Opcode::Pong, hello, 11)
    );
    // 256 bytes binary message in a single unmasked frame.
    let data: Vec<u8> = (0..=255u8).collect();
    let mut bin256 = vec![0x82, 0x7E, 0x01, 0x00];
    bin256.extend_from_slice(&data);
    assert_eq!(
        parse_everywhere(&bin256, &l, Role::Client),
        complete(true, Opcode::Binary, &data, 260)
    );
    // 64 KiB binary message in a single unmasked frame.
    let data: Vec<u8> = (0..65536u32).map(|i| (i * 31 % 251) as u8).collect();
    let mut bin64k = vec![0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0];
    bin64k.extend_from_slice(&data);
    assert_eq!(
        parse(&bin64k, &l, Role::Client),
        complete(true, Opcode::Binary, &data, 65546)
    );
    for k in [0, 1, 2, 9, 10, 11, 65545] {
        assert_eq!(parse(&bin64k[..k], &l, Role::Client), Ok(Progress::Partial));
    }

    // The writers produce exactly these bytes.
    let mut out = Vec::new();
    write_text(&mut out, "Hello");
    assert_eq!(out, unmasked);
    out.clear();
    write_frame_masked(&mut out, true, Opcode::Text, hello, MASK);
    assert_eq!(out, masked);
    out.clear();
    write_frame(&mut out, false, Opcode::Text, b"Hel");
    write_frame(&mut out, true, Opcode::Continuation, b"lo");
    assert_eq!(out, [&first[..], &second[..]].concat());
    out.clear();
    write_ping(&mut out, hello);
    assert_eq!(out, ping);
    out.clear();
    write_frame_masked(&mut out, true, Opcode::Pong, hello, MASK);
    assert_eq!(out, pong);
    out.clear();
    write_binary(&mut out, &bin256[4..]);
    assert_eq!(out, bin256);
    out.clear();
    write_binary(&mut out, &bin64k[10..]);
    assert_eq!(out, bin64k);
}

#[test]
fn length_encodings_at_their_boundaries() {
    let limits = Limits::default();
    // (payload length, header length unmasked, the length bytes after the first byte)
    let cases: &[(usize, usize, &[u8])] = &[
        (0, 2, &[0]),
        (1, 2, &[1]),
        (125, 2, &[125]),
        (126, 4, &[126, 0, 126]),
        (127, 4, &[126, 0, 127]),
        (65535, 4, &[126, 0xFF, 0xFF]),
        (65536, 10, &[127, 0, 0, 0, 0, 0, 1, 0, 0]),
        (65537, 10, &[127, 0, 0, 0, 0, 0, 1, 0, 1]),
    ];
    for &(len, header_len, length) in cases {
        let payload: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        for (role, mask) in [(Role::Client, None), (Role::Server, Some(MASK))] {
            let input = raw(BINARY, mask, &payload);
            let masked_extra = if mask.is_some() { 4 } else { 0 };
            assert_eq!(&input[1..1 + length.len()][1..], &length[1..]);
            assert_eq!(input[1] & 0x7F, length[0]);
            assert_eq!(input.len(), header_len + masked_extra + len, "len {len}");
            // Every prefix is Partial (checked for the small ones byte by byte).
            let result = if len <= 300 {
                parse_everywhere(&input, &limits, role)
            } else {
                for k in [0, 1, header_len, header_len + masked_extra, input.len() - 1] {
                    assert_eq!(parse(&input[..k], &limits, role), Ok(Progress::Partial));
                }
                parse(&input, &limits, role)
            };
            assert_eq!(
                result,
                complete(true, Opcode::Binary, &payload, input.len()),
                "len {len} {role:?}"
            );
            // The header alone is enough for parse_header.
            match parse_header(&input[..header_len + masked_extra], &limits, role) {
                Ok(Progress::Complete(h)) => {
                    assert_eq!(h.header_len, header_len + masked_extra);
                    assert_eq!(h.payload_len, len);
                    assert_eq!(h.mask, mask);
                    assert!(h.header_len <= FRAME_HEADER_BYTES_MAX);
                }
                other => panic!("len {len}: {other:?}"),
            }
            // The writers choose the same (minimal) encoding.
            let mut out = Vec::new();
            match mask {
                None => write_binary(&mut out, &payload),
                Some(m) => write_frame_masked(&mut out, true, Opcode::Binary, &payload, m),
            }
            assert_eq!(out, input, "writer, len {len}");
        }
    }
}

#[test]
fn frame_rules_table() {
    let l = Limits::default();
    let r123 = [b'r'; 123];
    let grin = "bye 😀".as_bytes();
    // Valid frames a server reads with the default limits: (what, input, fin, opcode, payload).
    // The frame is the whole input.
    type Valid = (&'static str, Vec<u8>, bool, Opcode, Vec<u8>);
    let valid: Vec<Valid> = vec![
        ("empty text", client(TEXT, b""), true, Opcode::Text, vec![]),
        (
            "empty binary",
            client(BINARY, b""),
            true,
            Opcode::Binary,
            vec![],
        ),
        (
            "non-final text",
            client(TEXT_FIRST, b"ab"),
            false,
            Opcode::Text,
            b"ab".to_vec(),
        ),
        (
            "non-final binary",
            client(BINARY_FIRST, b"ab"),
            false,
            Opcode::Binary,
            b"ab".to_vec(),
        ),
        (
            "continuation",
            client(CONT, b"ab"),
            false,
            Opcode::Continuation,
            b"ab".to_vec(),
        ),
        (
            "final continuation",
            client(CONT_FINAL, b"a"),
            true,
            Opcode::Continuation,
            b"a".to_vec(),
        ),
        ("empty ping", client(PING, b""), true, Opcode::Ping, vec![]),
        (
            "ping of 125",
            client(PING, &[7; 125]),
            true,
            Opcode::Ping,
            vec![7; 125],
        ),
        (
            "pong of 125",
            client(PONG, &[7; 125]),
            true,
            Opcode::Pong,
            vec![7; 125],
        ),
        (
            "empty close",
            client(CLOSE, b""),
            true,
            Opcode::Close,
            vec![],
        ),
        (
            "close, code only",
            client(CLOSE, &[3, 232]),
            true,
            Opcode::Close,
            vec![3, 232],
        ),
        (
            "close of 125",
            client(CLOSE, &close_payload(1001, &r123)),
            true,
            Opcode::Close,
            close_payload(1001, &r123),
        ),
        (
            "close, UTF-8 reason",
            client(CLOSE, &close_payload(4000, grin)),
            true,
            Opcode::Close,
            close_payload(4000, grin),
        ),
        // Invalid UTF-8 in a text frame is the assembler's business, not the frame parser's.
        (
            "invalid UTF-8 text frame",
            client(TEXT, b"\xFF"),
            true,
            Opcode::Text,
            vec![0xFF],
        ),
    ];
    for (what, input, fin, opcode, payload) in valid {
        let expected = complete(fin, opcode, &payload, input.len());
        assert_eq!(
            parse_everywhere(&input, &l, Role::Server),
            expected,
            "{what}"
        );
    }

    // Frames a server rejects with the default limits: (what, input, error).
    let invalid: Vec<(&str, Vec<u8>, Error)> = vec![
        // Reserved bits.
        ("RSV1", client(0xC1, b"a"), Error::ReservedBits),
        ("RSV2", client(0xA1, b"a"), Error::ReservedBits),
        ("RSV3", client(0x91, b"a"), Error::ReservedBits),
        ("all RSV", client(0xF1, b"a"), Error::ReservedBits),
        ("RSV on ping", client(0xC9, b""), Error::ReservedBits),
        (
            "RSV on continuation",
            client(0x40, b""),
            Error::ReservedBits,
        ),
        // Masking.
        ("unmasked text", raw(TEXT, None, b"hi"), Error::Unmasked),
        ("unmasked ping", raw(PING, None, b""), Error::Unmasked),
        // Non-minimal and bogus lengths.
        (
            "16-bit 0",
            client_len(BINARY, &mut [126, 0, 0], b""),
            Error::NonMinimalLength,
        ),
        (
            "16-bit 125",
            client_len(BINARY, &mut [126, 0, 125], &[0; 125]),
            Error::NonMinimalLength,
        ),
        (
            "64-bit 0",
            client_len(BINARY, &mut [127, 0, 0, 0, 0, 0, 0, 0, 0], b""),
            Error::NonMinimalLength,
        ),
        (
            "64-bit 125",
            client_len(BINARY, &mut [127, 0, 0, 0, 0, 0, 0, 0, 125], &[0; 125]),
            Error::NonMinimalLength,
        ),
        (
            "64-bit 65535",
            client_len(BINARY, &mut [127, 0, 0, 0, 0, 0, 0, 255, 255], b""),
            Error::NonMinimalLength,
        ),
        (
            "64-bit MSB",
            client_len(BINARY, &mut [127, 0x80, 0, 0, 0, 0, 0, 0, 1], b""),
            Error::LengthMsb,
        ),
        (
            "64-bit all ones",
            client_len(
                BINARY,
                &mut [127, 255, 255, 255, 255, 255, 255, 255, 255],
                b"",
            ),
            Error::LengthMsb,
        ),
        // The frame limit, from the header alone (no payload follows).
        (
            "64-bit 2^63-1",
            client_len(
                BINARY,
                &mut [127, 127, 255, 255, 255, 255, 255, 255, 255],
                b"",
            ),
            Error::FrameTooLarge,
        ),
        (
            "64-bit 1 MiB + 1",
            client_len(BINARY, &mut [127, 0, 0, 0, 0, 0, 0x10, 0, 1], b""),
            Error::FrameTooLarge,
        ),
        // Control frames.
        (
            "fragmented ping",
            client(0x09, b""),
            Error::FragmentedControl,
        ),
        (
            "fragmented pong",
            client(0x0A, b""),
            Error::FragmentedControl,
        ),
        (
            "fragmented close",
            client(0x08, b""),
            Error::FragmentedControl,
        ),
        (
            "ping of 126",
            client(PING, &[0; 126]),
            Error::ControlTooLong,
        ),
        (
            "pong of 126",
            client(PONG, &[0; 126]),
            Error::ControlTooLong,
        ),
        (
            "close of 126",
            client(CLOSE, &close_payload(1000, &[b'a'; 124])),
            Error::ControlTooLong,
        ),
        (
            "ping with a 64-bit length",
            client(PING, &[0; 70000]),
            Error::ControlTooLong,
        ),
        (
            "close of one byte",
            client(CLOSE, &[3]),
            Error::CloseOneByte,
        ),
        (
            "close of one byte, header only",
            client_len(CLOSE, &mut [1], b""),
            Error::CloseOneByte,
        ),
        (
            "close reason not UTF-8",
            client(CLOSE, &close_payload(1000, b"\xC0\x80")),
            Error::InvalidCloseReason,
        ),
        (
            "close reason, cut code point",
            client(CLOSE, &close_payload(1000, &grin[..6])),
            Error::InvalidCloseReason,
        ),
        (
            "close code 1005",
            client(CLOSE, &close_payload(1005, b"")),
            Error::InvalidCloseCode,
        ),
    ];
    for (what, input, error) in invalid {
        assert_eq!(
            parse_everywhere(&input, &l, Role::Server),
            Err(error),
            "{what}"
        );
        let code = match error {
            Error::InvalidCloseReason => 1007,
            Error::FrameTooLarge => 1009,
            _ => 1002,
        };
        assert_eq!(error.code(), code, "{what}");
        assert!(error.reason().len() <= CLOSE_REASON_BYTES_MAX);
    }

    // The role decides the mask bit.
    let to_client = parse_everywhere(&raw(TEXT, None, b"hi"), &l, Role::Client);
    assert_eq!(to_client, complete(true, Opcode::Text, b"hi", 4));
    let masked = parse_everywhere(&raw(TEXT, Some(MASK), b"hi"), &l, Role::Client);
    assert_eq!(masked, Err(Error::Masked));

    // A configured frame limit, decided from the header alone.
    let small = Limits {
        frame_payload_bytes_max: 1000,
        message_bytes_max: 4000,
    };
    // (what, input, role, expected)
    let limited: Vec<(&str, Vec<u8>, Role, Parsed)> = vec![
        (
            "at the limit",
            client(BINARY, &[1; 1000]),
            Role::Server,
            complete(true, Opcode::Binary, &[1; 1000], 1008),
        ),
        (
            "at the limit, no payload yet",
            client_len(BINARY, &mut [126, 3, 232], b""),
            Role::Server,
            Ok(Progress::Partial),
        ),
        (
            "over the limit",
            client_len(BINARY, &mut [126, 3, 233], b""),
            Role::Server,
            Err(Error::FrameTooLarge),
        ),
        (
            "over, mask key not here yet",
            vec![BINARY, 0x80 | 126, 3, 233],
            Role::Server,
            Err(Error::FrameTooLarge),
        ),
        (
            "over, to a client",
            raw_len(BINARY, &mut [126, 3, 233], None, b""),
            Role::Client,
            Err(Error::FrameTooLarge),
        ),
        (
            "7-bit over a tiny limit",
            client_len(TEXT, &mut [100], b""),
            Role::Server,
            Ok(Progress::Partial),
        ),
    ];
    for (what, input, role, expected) in limited {
        assert_eq!(parse_everywhere(&input, &small, role), expected, "{what}");
    }
    let tiny = Limits {
        frame_payload_bytes_max: 99,
        ..l
    };
    let input = client_len(TEXT, &mut [100], b"");
    assert_eq!(
        parse_everywhere(&input, &tiny, Role::Server),
        Err(Error::FrameTooLarge)
    );
    assert_eq!(
        parse(&input[..2], &tiny, Role::Server),
        Err(Error::FrameTooLarge),
        "before the mask key"
    );
}

#[test]
fn unknown_opcodes_are_protocol_errors() {
    let l = Limits::default();
    for op in (0x3..=0x7).chain(0xB..=0xF) {
        for fin in [0x00, 0x80] {
            let input = client(fin | op, b"x");
            assert_eq!(
                parse_everywhere(&input, &l, Role::Server),
                Err(Error::UnknownOpcode)
            );
            assert_eq!(Error::UnknownOpcode.code(), 1002);
            // Known from the first byte alone.
            assert_eq!(
                parse(&input[..1], &l, Role::Server),
                Err(Error::UnknownOpcode)
            );
        }
        assert_eq!(Opcode::from_bits(op), None);
    }
}

#[test]
fn close_codes_table() {
    // (code, allowed on the wire)
    let cases: &[(u16, bool)] = &[
        (0, false),
        (999, false),
        (1000, true),
        (1001, true),
        (1002, true),
        (1003, true),
        (1004, false),
        (1005, false),
        (1006, false),
        (1007, true),
        (1008, true),
        (1009, true),
        (1010, true),
        (1011, true),
        (1012, true),
        (1013, true),
        (1014, true),
        (1015, false),
        (1016, false),
        (1100, false),
        (2000, false),
        (2999, false),
        (3000, true),
        (3999, true),
        (4000, true),
        (4999, true),
        (5000, false),
        (65535, false),
    ];
    let l = Limits::default();
    for &(code, allowed) in cases {
        assert_eq!(is_valid_close_code(code), allowed, "{code}");
        let payload = close_payload(code, b"why");
        let expected = if allowed {
            complete(true, Opcode::Close, &payload, 11)
        } else {
            Err(Error::InvalidCloseCode)
        };
        assert_eq!(
            parse_everywhere(&client(CLOSE, &payload), &l, Role::Server),
            expected,
            "{code}"
        );
        match parse_close_payload(&payload) {
            Ok(Some(c)) if allowed => assert_eq!((c.code, c.reason), (code, "why")),
            Err(Error::InvalidCloseCode) if !allowed => {}
            other => panic!("{code}: {other:?}"),
        }
        // The writer never sends a forbidden code: it sends no status instead.
        let mut out = Vec::new();
        write_close(&mut out, code, "why");
        if allowed {
            assert_eq!(out, raw(CLOSE, None, &payload));
        } else {
            assert_eq!(out, [0x88, 0x00]);
        }
    }
    assert_eq!(parse_close_payload(b""), Ok(None));
    assert_eq!(parse_close_payload(b"\x03"), Err(Error::CloseOneByte));
}

#[test]
fn payload_is_unmasked_in_place() {
    let input = client(BINARY, b"in place");
    let mut buf = input.clone();
    let start = buf.as_ptr() as usize;
    match parse_frame(&mut buf, &Limits::default(), Role::Server) {
        Ok(Progress::Complete(f)) => {
            assert_eq!(f.payload, b"in place");
            assert_eq!(
                f.payload.as_ptr() as usize,
                start + 6,
                "payload borrows the buffer"
            );
            f.payload.make_ascii_uppercase();
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(&buf[6..], b"IN PLACE");
    assert_eq!(&buf[..6], &input[..6], "the header is untouched");
    // Partial parses leave the buffer alone.
    let mut partial = input[..10].to_vec();
    assert_eq!(
        parse_frame(&mut partial, &Limits::default(), Role::Server),
        Ok(Progress::Partial)
    );
    assert_eq!(partial, input[..10]);
}

// ---------------------------------------------------------------------------------------------
// Message assembly.

/// An owned copy of an assembler event.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

fn own(message: Message<'_>) -> Ev {
    match message {
        Message::Text(t) => Ev::Text(t.as_str().to_owned()),
        Message::Binary(b) => Ev::Binary(b.to_vec()),
        Message::Ping(p) => Ev::Ping(p.to_vec()),
        Message::Pong(p) => Ev::Pong(p.to_vec()),
        Message::Close(c) => Ev::Close(c.map(|c| (c.code, c.reason.to_owned()))),
    }
}

/// What a connection saw: the events, and the error that ended it (if any).
type Outcome = (Vec<Ev>, Option<Error>);

/// Drives an assembler the way a connection loop would: bytes arrive in the pieces `cuts`
/// delimit, are appended to a buffer, frames are decoded and consumed while complete.
fn run_cuts(stream: &[u8], cuts: &[usize], limits: &Limits, role: Role) -> Outcome {
    let mut asm = Assembler::new(limits, role);
    let mut buf: Vec<u8> = Vec::new();
    let mut events = Vec::new();
    let mut fed = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        buf.extend_from_slice(&stream[fed..cut]);
        fed = cut;
        loop {
            let consumed = match asm.decode(&mut buf) {
                Err(e) => return (events, Some(e)),
                Ok(Progress::Partial) => break,
                Ok(Progress::Complete(d)) => {
                    assert!(
                        d.len > 0
                            && d.len <= FRAME_HEADER_BYTES_MAX + limits.frame_payload_bytes_max
                    );
                    if let Some(m) = d.message {
                        events.push(own(m));
                    }
                    d.len
                }
            };
            buf.drain(..consumed);
        }
    }
    assert!(
        buf.is_empty(),
        "unconsumed bytes at the end of a test stream"
    );
    (events, None)
}

/// Runs `stream` whole, split in two at every offset, and byte by byte; asserts all agree.
fn run_everywhere(stream: &[u8], limits: &Limits, role: Role) -> Outcome {
    let whole = run_cuts(stream, &[], limits, role);
    for k in 0..=stream.len() {
        assert_eq!(run_cuts(stream, &[k], limits, role), whole, "split at {k}");
    }
    let bytewise: Vec<usize> = (1..stream.len()).collect();
    assert_eq!(
        run_cuts(stream, &bytewise, limits, role),
        whole,
        "byte by byte"
    );
    whole
}

fn text(s: &str) -> Ev {
    Ev::Text(s.to_owned())
}

#[test]
fn assembly_table() {
    let l = Limits::default();
    let grin = "😀".as_bytes(); // F0 9F 98 80
    let cases: Vec<(&str, Vec<Vec<u8>>, Outcome)> = vec![
        (
            "single text",
            vec![client(TEXT, b"Hello")],
            (vec![text("Hello")], None),
        ),
        (
            "single binary",
            vec![client(BINARY, b"\x00\xFF")],
            (vec![Ev::Binary(vec![0, 255])], None),
        ),
        (
            "empty text",
            vec![client(TEXT, b"")],
            (vec![text("")], None),
        ),
        (
            "fragmented text",
            vec![client(TEXT_FIRST, b"Hel"), client(CONT_FINAL, b"lo")],
            (vec![text("Hello")], None),
        ),
        (
            "fragmented binary in three",
            vec![
                client(BINARY_FIRST, b"a"),
                client(CONT, b"b"),
                client(CONT_FINAL, b"c"),
            ],
            (vec![Ev::Binary(b"abc".to_vec())], None),
        ),
        (
            "empty fragments",
            vec![
                client(TEXT_FIRST, b""),
                client(CONT, b""),
                client(CONT_FINAL, b""),
            ],
            (vec![text("")], None),
        ),
        (
            "ping between fragments",
            vec![
                client(TEXT_FIRST, b"Hel"),
                client(PING, b"p"),
                client(CONT_FINAL, b"lo"),
            ],
            (vec![Ev::Ping(b"p".to_vec()), text("Hello")], None),
        ),
        (
            "pings and pongs between every fragment",
            vec![
                client(PING, b"0"),
                client(BINARY_FIRST, b"a"),
                client(PING, b"1"),
                client(CONT, b"b"),
                client(PONG, b"2"),
                client(PING, b""),
                client(CONT_FINAL, b"c"),
                client(PONG, b"3"),
            ],
            (
                vec![
                    Ev::Ping(b"0".to_vec()),
                    Ev::Ping(b"1".to_vec()),
                    Ev::Pong(b"2".to_vec()),
                    Ev::Ping(vec![]),
                    Ev::Binary(b"abc".to_vec()),
                    Ev::Pong(b"3".to_vec()),
                ],
                None,
            ),
        ),
        (
            "4-byte code point split across fragments",
            vec![
                client(TEXT_FIRST, &[b"a", &grin[..2]].concat()),
                client(CONT_FINAL, &[&grin[2..], b"b"].concat()),
            ],
            (vec![text("a😀b")], None),
        ),
        (
            "4-byte code point one byte per fragment, a ping in the middle",
            vec![
                client(TEXT_FIRST, &grin[..1]),
                client(CONT, &grin[1..2]),
                client(PING, b""),
                client(CONT, &grin[2..3]),
                client(CONT_FINAL, &grin[3..]),
            ],
            (vec![Ev::Ping(vec![]), text("😀")], None),
        ),
        (
            "two messages back to back",
            vec![
                client(TEXT_FIRST, b"a"),
                client(CONT_FINAL, b"b"),
                client(TEXT, b"c"),
                client(BINARY_FIRST, b"d"),
                client(CONT_FINAL, b"e"),
            ],
            (
                vec![text("ab"), text("c"), Ev::Binary(b"de".to_vec())],
                None,
            ),
        ),
        (
            "close without status",
            vec![client(CLOSE, b"")],
            (vec![Ev::Close(None)], None),
        ),
        (
            "close with status",
            vec![client(CLOSE, &close_payload(1001, b"bye"))],
            (vec![Ev::Close(Some((1001, "bye".to_owned())))], None),
        ),
        (
            "close inside a fragmented message",
            vec![
                client(TEXT_FIRST, b"a"),
                client(CLOSE, &close_payload(1000, b"")),
            ],
            (vec![Ev::Close(Some((1000, String::new())))], None),
        ),
        // Sequencing errors.
        (
            "continuation without a message",
            vec![client(CONT_FINAL, b"a")],
            (vec![], Some(Error::UnexpectedContinuation)),
        ),
        (
            "non-final continuation first",
            vec![client(CONT, b"a")],
            (vec![], Some(Error::UnexpectedContinuation)),
        ),
        (
            "continuation after a complete message",
            vec![client(TEXT, b"a"), client(CONT_FINAL, b"b")],
            (vec![text("a")], Some(Error::UnexpectedContinuation)),
        ),
        (
            "text inside a fragmented message",
            vec![client(TEXT_FIRST, b"a"), client(TEXT, b"b")],
            (vec![], Some(Error::InterleavedMessage)),
        ),
        (
            "binary inside a fragmented text message",
            vec![
                client(TEXT_FIRST, b"a"),
                client(PING, b""),
                client(BINARY_FIRST, b"b"),
            ],
            (vec![Ev::Ping(vec![])], Some(Error::InterleavedMessage)),
        ),
        // UTF-8.
        (
            "invalid single text",
            vec![client(TEXT, b"ok\xFF")],
            (vec![], Some(Error::InvalidUtf8)),
        ),
        (
            "overlong encoding",
            vec![client(TEXT, b"\xC0\x80")],
            (vec![], Some(Error::InvalidUtf8)),
        ),
        (
            "surrogate",
            vec![client(TEXT, b"\xED\xA0\x80")],
            (vec![], Some(Error::InvalidUtf8)),
        ),
        (
            "above U+10FFFF",
            vec![client(TEXT, b"\xF4\x90\x80\x80")],
            (vec![], Some(Error::InvalidUtf8)),
        ),
        (
            "truncated code point in a single frame",
            vec![client(TEXT, &grin[..3])],
            (vec![], Some(Error::InvalidUtf8)),
        ),
        // Fail fast: only the first fragment arrives, and it already condemns the message.
        (
            "invalid first fragment",
            vec![client(TEXT_FIRST, b"ok\xFF")],
            (vec![], Some(Error::InvalidUtf8)),
        ),
        (
            "impossible prefix in the first fragment",
            vec![client(TEXT_FIRST, b"\xF4\x90")],
            (vec![], Some(Error::InvalidUtf8)),
        ),
        (
            "surrogate prefix in the first fragment",
            vec![client(TEXT_FIRST, b"\xED\xA0")],
            (vec![], Some(Error::InvalidUtf8)),
        ),
        (
            "invalid middle fragment",
            vec![client(TEXT_FIRST, b"ok"), client(CONT, b"\xFE")],
            (vec![], Some(Error::InvalidUtf8)),
        ),
        (
            "split code point broken by the next fragment",
            vec![client(TEXT_FIRST, &grin[..2]), client(CONT_FINAL, b"A")],
            (vec![], Some(Error::InvalidUtf8)),
        ),
        (
            "message ends inside a code point",
            vec![client(TEXT_FIRST, b"a"), client(CONT_FINAL, &grin[..3])],
            (vec![], Some(Error::InvalidUtf8)),
        ),
        (
            "invalid bytes in a binary message are fine",
            vec![client(BINARY_FIRST, b"\xFF"), client(CONT_FINAL, b"\xFE")],
            (vec![Ev::Binary(vec![0xFF, 0xFE])], None),
        ),
        // Frame-level errors surface through the assembler too.
        (
            "unmasked frame",
            vec![raw(TEXT, None, b"a")],
            (vec![], Some(Error::Unmasked)),
        ),
        (
            "bad close code",
            vec![client(CLOSE, &close_payload(1006, b""))],
            (vec![], Some(Error::InvalidCloseCode)),
        ),
    ];
    for (what, frames, expected) in cases {
        let stream = frames.concat();
        let got = run_everywhere(&stream, &l, Role::Server);
        assert_eq!(got, expected, "{what}");
    }
}

#[test]
fn message_limit_is_checked_from_the_header() {
    let limits = Limits {
        frame_payload_bytes_max: 100,
        message_bytes_max: 150,
    };
    // (what, frames, then a header-only frame announcing `len` bytes, expected)
    type Case = (&'static str, Vec<Vec<u8>>, u8, u8, Outcome);
    let cases: Vec<Case> = vec![
        (
            "single frame at the frame limit",
            vec![],
            BINARY,
            100,
            (vec![], None),
        ),
        (
            "single frame over the frame limit",
            vec![],
            BINARY,
            101,
            (vec![], Some(Error::FrameTooLarge)),
        ),
        (
            "continuation up to the message limit",
            vec![client(BINARY_FIRST, &[0; 100])],
            CONT_FINAL,
            50,
            (vec![], None),
        ),
        (
            "continuation over the message limit",
            vec![client(BINARY_FIRST, &[0; 100])],
            CONT_FINAL,
            51,
            (vec![], Some(Error::MessageTooLarge)),
        ),
        (
            "third fragment over the limit, pings in between",
            vec![
                client(TEXT_FIRST, &[b'a'; 100]),
                client(PING, b""),
                client(CONT, &[b'a'; 40]),
            ],
            CONT,
            11,
            (vec![Ev::Ping(vec![])], Some(Error::MessageTooLarge)),
        ),
    ];
    for (what, frames, b0, len, expected) in cases {
        let mut stream = frames.concat();
        stream.extend_from_slice(&[b0, 0x80 | len]);
        stream.extend_from_slice(&MASK);
        // The payload never arrives: within the limit the stream just stops (Partial).
        let mut asm = Assembler::new(&limits, Role::Server);
        let mut buf = stream.clone();
        let mut events = Vec::new();
        let outcome = loop {
            let consumed = match asm.decode(&mut buf) {
                Err(e) => break (events, Some(e)),
                Ok(Progress::Partial) => break (events, None),
                Ok(Progress::Complete(d)) => {
                    if let Some(m) = d.message {
                        events.push(own(m));
                    }
                    d.len
                }
            };
            buf.drain(..consumed);
        };
        assert_eq!(outcome, expected, "{what}");
        if expected.1.is_none() {
            assert_eq!(buf.len(), 6, "{what}: only the header is left");
            assert!(
                asm.in_message() == (b0 == CONT || b0 == CONT_FINAL),
                "{what}"
            );
        }
    }
    assert_eq!(Error::MessageTooLarge.code(), 1009);
    assert_eq!(Error::FrameTooLarge.code(), 1009);

    // A single frame larger than the message limit (but within the frame limit).
    let tight = Limits {
        frame_payload_bytes_max: 100,
        message_bytes_max: 10,
    };
    let mut asm = Assembler::new(&tight, Role::Server);
    let mut header = vec![BINARY, 0x80 | 11];
    header.extend_from_slice(&MASK);
    assert_eq!(asm.decode(&mut header), Err(Error::MessageTooLarge));
}

#[test]
fn large_fragmented_messages_reassemble() {
    let l = Limits::default();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    let text_data: String = "añ😀z".repeat(20_000);
    for (b0, payload) in [
        (BINARY_FIRST, &data[..]),
        (TEXT_FIRST, text_data.as_bytes()),
    ] {
        // Fragments of odd sizes so code points straddle them.
        let mut frames = Vec::new();
        let mut at = 0;
        let mut size = 1;
        while at < payload.len() {
            let end = (at + size).min(payload.len());
            let first = at == 0;
            let last = end == payload.len();
            let opcode = if first { b0 } else { CONT };
            frames.push(client(
                if last { opcode | 0x80 } else { opcode },
                &payload[at..end],
            ));
            frames.push(client(PING, b""));
            at = end;
            size = size * 3 + 1;
        }
        let stream = frames.concat();
        let (events, error) = run_cuts(
            &stream,
            &[stream.len() / 3, stream.len() / 2],
            &l,
            Role::Server,
        );
        assert_eq!(error, None);
        let messages: Vec<&Ev> = events
            .iter()
            .filter(|e| !matches!(e, Ev::Ping(_)))
            .collect();
        let expected = if b0 == TEXT_FIRST {
            Ev::Text(text_data.clone())
        } else {
            Ev::Binary(data.clone())
        };
        assert_eq!(messages, [&expected]);
    }
}

#[test]
fn text_payload_is_mutable_in_place() {
    let mut buf = client(TEXT, b"{\"a\":1}");
    let mut asm = Assembler::new(&Limits::default(), Role::Server);
    match asm.decode(&mut buf) {
        Ok(Progress::Complete(d)) => match d.message {
            Some(Message::Text(t)) => {
                assert_eq!(&*t, "{\"a\":1}");
                let bytes = t.into_bytes_mut();
                bytes[1] = b'\'';
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    assert_eq!(&buf[6..], b"{'a\":1}");
}

// ---------------------------------------------------------------------------------------------
// Writers.

#[test]
fn writers_round_trip_through_the_parser() {
    let l = Limits::default();
    let long: Vec<u8> = (0..200u8).collect();
    // (what, written frame, expected parse by a client)
    let mut cases: Vec<(&str, Vec<u8>, Owned)> = Vec::new();
    let mut add = |what: &'static str, f: &dyn Fn(&mut Vec<u8>), fin, opcode, payload: &[u8]| {
        let mut out = Vec::new();
        f(&mut out);
        let len = out.len();
        cases.push((
            what,
            out,
            Owned {
                fin,
                opcode,
                payload: payload.to_vec(),
                len,
            },
        ));
    };
    add(
        "text",
        &|o| write_text(o, "héllo"),
        true,
        Opcode::Text,
        "héllo".as_bytes(),
    );
    add(
        "binary",
        &|o| write_binary(o, b"\x00\x01"),
        true,
        Opcode::Binary,
        b"\x00\x01",
    );
    add("ping", &|o| write_ping(o, b"p"), true, Opcode::Ping, b"p");
    add("pong", &|o| write_pong(o, b"q"), true, Opcode::Pong, b"q");
    add(
        "ping cut to 125",
        &|o| write_ping(o, &long),
        true,
        Opcode::Ping,
        &long[..125],
    );
    add(
        "pong cut to 125",
        &|o| write_pong(o, &long),
        true,
        Opcode::Pong,
        &long[..125],
    );
    add(
        "non-final control written final",
        &|o| write_frame(o, false, Opcode::Ping, b"x"),
        true,
        Opcode::Ping,
        b"x",
    );
    add(
        "close",
        &|o| write_close(o, 1000, "done"),
        true,
        Opcode::Close,
        b"\x03\xE8done",
    );
    add(
        "close, empty reason",
        &|o| write_close(o, 4001, ""),
        true,
        Opcode::Close,
        b"\x0F\xA1",
    );
    add(
        "close, forbidden code",
        &|o| write_close(o, 1006, "x"),
        true,
        Opcode::Close,
        b"",
    );
    add(
        "non-final text",
        &|o| write_frame(o, false, Opcode::Text, b"ab"),
        false,
        Opcode::Text,
        b"ab",
    );
    add(
        "continuation",
        &|o| write_frame(o, true, Opcode::Continuation, b"cd"),
        true,
        Opcode::Continuation,
        b"cd",
    );
    for (what, written, expected) in cases {
        assert_eq!(
            parse_everywhere(&written, &l, Role::Client),
            Ok(Progress::Complete(expected.clone())),
            "{what}"
        );
        assert_eq!(written[1] & 0x80, 0, "{what}: a server never masks");
        // The masked variant carries the same frame to a server.
        let mut masked = Vec::new();
        write_frame_masked(
            &mut masked,
            expected.fin,
            expected.opcode,
            &expected.payload,
            [1, 2, 3, 4],
        );
        assert_eq!(
            parse(&masked, &l, Role::Server),
            complete(
                expected.fin,
                expected.opcode,
                &expected.payload,
                masked.len()
            ),
            "{what} masked"
        );
    }
}

#[test]
fn close_reason_is_cut_at_a_char_boundary() {
    // (reason, expected reason bytes after cutting)
    let ascii = "r".repeat(200);
    let two_byte = "é".repeat(70); // 140 bytes; 123 falls inside a char
    let four_byte = "😀".repeat(40); // 160 bytes; 123 falls inside a char
    let mixed = format!("{}😀tail", "a".repeat(121)); // the emoji straddles 123
    let cases: Vec<(&str, &str)> = vec![
        ("", ""),
        ("short", "short"),
        (&ascii, &ascii[..123]),
        (&two_byte, &two_byte[..122]),
        (&four_byte, &four_byte[..120]),
        (&mixed, &mixed[..121]),
        (&ascii[..123], &ascii[..123]),
    ];
    for (reason, expected) in cases {
        let mut out = Vec::new();
        write_close(&mut out, 1001, reason);
        let mut buf = out.clone();
        match parse_frame(&mut buf, &Limits::default(), Role::Client) {
            Ok(Progress::Complete(f)) => {
                let close = parse_close_payload(f.payload).ok().flatten();
                assert_eq!(close.map(|c| (c.code, c.reason)), Some((1001, expected)));
                assert!(f.payload.len() <= CONTROL_PAYLOAD_BYTES_MAX);
            }
            other => panic!("{other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fuzz-ish: random and mutated input never panics and keeps the API's promises.

/// What the fuzz loops reached, so they prove they get past the first bytes.
#[derive(Default)]
struct Reached {
    messages: usize,
    errors: std::collections::BTreeSet<&'static str>,
}

/// Decodes everything decodable in `input` with both roles; checks the promises on the way.
fn exercise(input: &[u8], limits: &Limits, reached: &mut Reached) {
    for role in [Role::Server, Role::Client] {
        let mut buf = input.to_vec();
        let _ = parse_header(&buf, limits, role);
        if let Ok(Progress::Complete(f)) = parse_frame(&mut buf, limits, role) {
            assert!(f.len <= input.len() && f.payload.len() < f.len);
            if f.opcode.is_control() {
                assert!(f.fin && f.payload.len() <= CONTROL_PAYLOAD_BYTES_MAX);
            }
        }
        let mut asm = Assembler::new(limits, role);
        let mut buf = input.to_vec();
        let mut rounds = 0;
        loop {
            rounds += 1;
            assert!(rounds <= input.len() + 1, "decode made no progress");
            let consumed = match asm.decode(&mut buf) {
                Err(e) => {
                    assert!(matches!(e.code(), 1002 | 1007 | 1009));
                    reached.errors.insert(e.reason());
                    break;
                }
                Ok(Progress::Partial) => break,
                Ok(Progress::Complete(d)) => {
                    if let Some(Message::Text(t)) = &d.message {
                        assert!(std::str::from_utf8(t.as_bytes()).is_ok());
                    }
                    reached.messages += usize::from(d.message.is_some());
                    d.len
                }
            };
            assert!(consumed > 0 && consumed <= buf.len());
            buf.drain(..consumed);
        }
        assert!(asm.assembled_len() <= limits.message_bytes_max);
    }
}

#[test]
fn fuzz_random_bytes_never_panic() {
    let mut rng = Rng(0x5EED_F00D);
    let limits = [
        Limits::default(),
        Limits {
            frame_payload_bytes_max: 16,
            message_bytes_max: 40,
        },
        Limits {
            frame_payload_bytes_max: 0,
            message_bytes_max: 0,
        },
        Limits {
            frame_payload_bytes_max: usize::MAX,
            message_bytes_max: usize::MAX,
        },
    ];
    // Plausible first bytes, so the fuzzer gets past byte 0 often.
    let firsts = [
        TEXT,
        BINARY,
        CLOSE,
        PING,
        PONG,
        TEXT_FIRST,
        BINARY_FIRST,
        CONT,
        CONT_FINAL,
    ];
    let mut reached = Reached::default();
    for i in 0..20_000 {
        let len = rng.below(48);
        let mut input: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
        // Mostly well-formed-looking streams: plausible first bytes, set mask bits, small
        // lengths.
        let mut at = 0;
        while at + 1 < input.len() && i % 4 != 0 {
            input[at] = firsts[rng.below(firsts.len())];
            let masked = if rng.below(8) == 0 { 0 } else { 0x80 };
            let small = rng.below(12) as u8;
            input[at + 1] = masked
                | if rng.below(10) == 0 {
                    126 + (small & 1)
                } else {
                    small
                };
            at += 2 + 4 + usize::from(small);
        }
        exercise(&input, &limits[i % limits.len()], &mut reached);
    }
    assert!(reached.messages > 1000, "{} messages", reached.messages);
    assert!(reached.errors.len() >= 12, "{:?}", reached.errors);
}

#[test]
fn fuzz_mutated_valid_streams_never_panic() {
    let mut rng = Rng(42);
    let grin = "😀".as_bytes();
    let base = [
        client(TEXT_FIRST, &grin[..2]),
        client(PING, b"ping"),
        client(CONT_FINAL, &grin[2..]),
        client(CLOSE, &close_payload(1000, b"ok")),
        client(BINARY, &[9; 130]),
    ]
    .concat();
    let limits = Limits::default();
    let mut reached = Reached::default();
    exercise(&base, &limits, &mut reached);
    assert_eq!(
        reached.messages, 4,
        "a server decodes the base stream (a client refuses it)"
    );
    for _ in 0..20_000 {
        let mut input = base.clone();
        for _ in 0..1 + rng.below(3) {
            match rng.below(3) {
                0 => {
                    let i = rng.below(input.len());
                    input[i] ^= 1 << rng.below(8);
                }
                1 => {
                    let i = rng.below(input.len());
                    input[i] = rng.byte();
                }
                _ => {
                    let cut = rng.below(input.len());
                    input.truncate(cut.max(1));
                }
            }
        }
        exercise(&input, &limits, &mut reached);
    }
    assert!(reached.messages > 10_000, "{} messages", reached.messages);
    assert!(reached.errors.len() >= 8, "{:?}", reached.errors);
}
