//! The RESP parser on hand-picked frames, and under proptest: any bytes, fed in any
//! pieces, never panic, and any command encoded as a multibulk parses back to itself.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

const LIMITS: FrameLimits = FrameLimits { max_command: 4096 };

fn parse_all(input: &[u8]) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
    let mut buf = BytesMut::from(input);
    let mut commands = Vec::new();
    while let Some(command) = parse(&mut buf, &LIMITS)? {
        commands.push(command);
    }
    Ok(commands)
}

fn encode(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[test]
fn pipelined_multibulk_commands_parse_one_by_one() {
    let commands =
        parse_all(b"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n").expect("valid");
    assert_eq!(commands.len(), 2);
    assert_eq!(commands[0], vec![Bytes::from("PING")]);
    assert_eq!(
        commands[1],
        vec![Bytes::from("SET"), Bytes::from("k"), Bytes::new()]
    );
}

#[test]
fn an_incomplete_command_waits_for_more_bytes_and_consumes_nothing() {
    let full = b"*2\r\n$3\r\nGET\r\n$5\r\nhello\r\n";
    for cut in 0..full.len() {
        let mut buf = BytesMut::from(&full[..cut]);
        assert_eq!(parse(&mut buf, &LIMITS), Ok(None), "cut at {cut}");
        assert_eq!(&buf[..], &full[..cut], "cut at {cut}");
    }
}

#[test]
fn inline_commands_split_on_spaces_and_honour_quotes() {
    let commands =
        parse_all(b"PING\r\nSET k \"a b\\x41\\n\"\nSET 'it\\'s' v\r\n\r\n").expect("valid");
    assert_eq!(commands[0], vec![Bytes::from("PING")]);
    assert_eq!(
        commands[1],
        vec![Bytes::from("SET"), Bytes::from("k"), Bytes::from("a bA\n")]
    );
    assert_eq!(
        commands[2],
        vec![Bytes::from("SET"), Bytes::from("it's"), Bytes::from("v")]
    );
    assert_eq!(
        commands[3],
        Vec::<Bytes>::new(),
        "an empty line is an empty command"
    );
}

#[test]
fn malformed_and_oversized_frames_are_protocol_errors() {
    let cases: [(&[u8], &str); 8] = [
        (b"*x\r\n", "invalid multibulk length"),
        (b"*2\r\n+GET\r\n", "expected '$', got '+'"),
        (b"*1\r\n$-5\r\n", "invalid bulk length"),
        (b"*1\r\n$3\r\nGETxx", "does not end with CRLF"),
        (b"*1\r\n$5000\r\n", "larger than the limit of 4096 bytes"),
        (b"*9999999\r\n", "invalid multibulk length"),
        (
            b"*5\r\n$1000\r\n",
            "", // fine so far: one 1000-byte argument may follow
        ),
        (b"SET \"unterminated\r\n", "unbalanced quotes"),
    ];
    for (input, expected) in cases {
        let got = parse_all(input);
        if expected.is_empty() {
            assert_eq!(got, Ok(vec![]), "{input:?}");
        } else {
            let err = got.expect_err(&format!("{input:?} must fail"));
            assert!(err.0.contains(expected), "{input:?}: {err}");
        }
    }
    // Five arguments of 1000 bytes exceed the 4096-byte command limit once the fifth is
    // announced, before any of it is buffered.
    let mut big = b"*5\r\n".to_vec();
    for _ in 0..5 {
        big.extend_from_slice(b"$1000\r\n");
        big.extend_from_slice(&[b'x'; 1000]);
        big.extend_from_slice(b"\r\n");
    }
    let err = parse_all(&big).expect_err("too large");
    assert!(err.0.contains("limit of 4096 bytes"), "{err}");
    let long_inline = vec![b'a'; MAX_INLINE + 1];
    assert!(
        parse_all(&long_inline).is_err(),
        "an inline request without end"
    );
}

#[test]
fn integers_parse_strictly() {
    assert_eq!(parse_i64(b"0"), Some(0));
    assert_eq!(parse_i64(b"-12"), Some(-12));
    assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
    for bad in [
        &b""[..],
        b"-",
        b"01",
        b"+1",
        b" 1",
        b"1a",
        b"9223372036854775808",
    ] {
        assert_eq!(parse_i64(bad), None, "{bad:?}");
    }
}

#[test]
fn replies_encode_in_resp2_and_resp3() {
    let mut out = BytesMut::new();
    let mut reply = Reply {
        out: &mut out,
        resp3: false,
    };
    reply.null();
    reply.map(1);
    reply.int(-42);
    reply.error("ERR a\r\nb");
    reply.text("hi");
    assert_eq!(&out[..], b"$-1\r\n*2\r\n:-42\r\n-ERR a  b\r\n$2\r\nhi\r\n");
    let mut out = BytesMut::new();
    let mut reply = Reply {
        out: &mut out,
        resp3: true,
    };
    reply.null();
    reply.map(1);
    reply.text("hi");
    assert_eq!(&out[..], b"_\r\n%1\r\n=6\r\ntxt:hi\r\n");
    assert_eq!(itoa(i64::MIN, &mut [0; 20]), b"-9223372036854775808");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Garbage, fed in two pieces, either parses or is a protocol error: never a panic,
    /// and never more than the bytes given.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), cut in 0usize..512) {
        let cut = cut.min(bytes.len());
        let mut buf = BytesMut::from(&bytes[..cut]);
        let mut fed = cut;
        loop {
            match parse(&mut buf, &LIMITS) {
                Ok(Some(_)) => continue,
                Ok(None) if fed < bytes.len() => {
                    buf.extend_from_slice(&bytes[fed..]);
                    fed = bytes.len();
                }
                Ok(None) | Err(_) => break,
            }
        }
    }

    /// Garbage that looks like RESP (mostly protocol bytes) never panics either.
    #[test]
    fn resp_shaped_garbage_never_panics(parts in proptest::collection::vec(
        prop_oneof![Just(&b"*"[..]), Just(&b"$"[..]), Just(&b"\r\n"[..]), Just(&b"-1"[..]),
                    Just(&b"3"[..]), Just(&b"0"[..]), Just(&b"GET"[..]), Just(&b"\""[..]),
                    Just(&b"\\x4"[..]), Just(&b" "[..]), Just(&b"\n"[..])], 0..64)) {
        let bytes: Vec<u8> = parts.concat();
        let _ = parse_all(&bytes);
    }

    /// Any command encoded as a multibulk, split anywhere, parses back to itself.
    #[test]
    fn multibulk_round_trips(args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..8), cut in 0usize..1024) {
        let encoded = encode(&args);
        let cut = cut.min(encoded.len());
        let mut buf = BytesMut::from(&encoded[..cut]);
        let parsed = match parse(&mut buf, &LIMITS).expect("valid") {
            Some(parsed) => parsed,
            None => {
                buf.extend_from_slice(&encoded[cut..]);
                parse(&mut buf, &LIMITS).expect("valid").expect("complete")
            }
        };
        let parsed: Vec<Vec<u8>> = parsed.iter().map(|a| a.to_vec()).collect();
        prop_assert_eq!(parsed, args);
        prop_assert!(buf.is_empty());
    }
}
