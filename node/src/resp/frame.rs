//! RESP framing: requests in (multibulk arrays and inline commands), replies out.
//!
//! [`parse`] takes one complete command off the front of a connection's read buffer
//! without copying its arguments: they are slices of the frozen request bytes. An
//! incomplete command leaves the buffer untouched (`Ok(None)`), so pipelined commands are
//! parsed one after another from one read. Every length is checked against
//! [`FrameLimits`] before anything is buffered for it: a client announcing a 1 TB bulk
//! gets an error, not an allocation. A protocol error ends only its own connection
//! (Redis does the same: the stream cannot be resynchronised).
//!
//! [`Reply`] writes answers straight into the connection's output buffer, in RESP2 or,
//! after `HELLO 3`, RESP3 (maps, null, and verbatim strings differ).

use bytes::{BufMut, Bytes, BytesMut};

/// Redis's own limit on a multibulk's argument count.
const MAX_ARGS: usize = 1024 * 1024;
/// Redis's limit on an inline command's length.
const MAX_INLINE: usize = 64 * 1024;

/// Sizes a request may have, derived from the node's HTTP limits, so RESP accepts what
/// HTTP accepts. Keys and values are checked against `--max-key-bytes` and
/// `--max-value-bytes` by the commands, which answer an error and keep the connection;
/// a command past this bound cannot be read at all, and ends its connection.
#[derive(Debug, Clone, Copy)]
pub struct FrameLimits {
    /// The most argument bytes one command may hold in all (an MSET).
    pub max_command: usize,
}

/// Why a connection's byte stream cannot be read as RESP. It is answered with
/// `-ERR Protocol error: …` and the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

fn protocol(message: impl Into<String>) -> ProtocolError {
    ProtocolError(message.into())
}

/// Takes one complete command off the front of `buf`: its arguments, the command name
/// first. `Ok(None)`: more bytes are needed. An empty inline line is skipped, as Redis
/// does, and yields an empty argument list.
pub fn parse(
    buf: &mut BytesMut,
    limits: &FrameLimits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buf, limits),
        Some(_) => parse_inline(buf),
    }
}

fn parse_multibulk(
    buf: &mut BytesMut,
    limits: &FrameLimits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let Some((count, mut at)) = header_line(buf, 0, b'*', "multibulk")? else {
        return Ok(None);
    };
    if count > MAX_ARGS as i64 {
        return Err(protocol("invalid multibulk length"));
    }
    // `*0` and `*-1` are empty commands, which Redis skips.
    let count = usize::try_from(count).unwrap_or(0);
    let mut spans = Vec::with_capacity(count.min(64));
    let mut declared = 0usize;
    for _ in 0..count {
        if at >= buf.len() {
            return Ok(None);
        }
        if buf[at] != b'$' {
            let got = char::from(buf[at]).escape_default().to_string();
            return Err(protocol(format!("expected '$', got '{got}'")));
        }
        let Some((len, start)) = header_line(buf, at, b'$', "bulk")? else {
            return Ok(None);
        };
        let len = usize::try_from(len).map_err(|_| protocol("invalid bulk length"))?;
        declared = declared.saturating_add(len);
        if declared > limits.max_command {
            return Err(protocol(format!(
                "the command is larger than the limit of {} bytes",
                limits.max_command
            )));
        }
        let end = start + len;
        if buf.len() < end + 2 {
            // Make room once for the rest of a large argument.
            buf.reserve(end + 2 - buf.len());
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(protocol("a bulk argument does not end with CRLF"));
        }
        spans.push((start, end));
        at = end + 2;
    }
    let frame = buf.split_to(at).freeze();
    Ok(Some(
        spans
            .into_iter()
            .map(|(start, end)| frame.slice(start..end))
            .collect(),
    ))
}

/// Reads `<kind><integer>\r\n` at `at`: the integer and where the line ends.
fn header_line(
    buf: &[u8],
    at: usize,
    kind: u8,
    what: &str,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    debug_assert_eq!(buf.get(at), Some(&kind));
    let Some(cr) = memchr::memchr(b'\r', &buf[at..]).map(|i| at + i) else {
        if buf.len() - at > 32 {
            return Err(protocol(format!("invalid {what} length")));
        }
        return Ok(None);
    };
    if cr + 1 >= buf.len() {
        return Ok(None);
    }
    if buf[cr + 1] != b'\n' {
        return Err(protocol(format!("invalid {what} length")));
    }
    let number =
        parse_i64(&buf[at + 1..cr]).ok_or_else(|| protocol(format!("invalid {what} length")))?;
    Ok(Some((number, cr + 2)))
}

fn parse_inline(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let Some(newline) = memchr::memchr(b'\n', buf) else {
        if buf.len() > MAX_INLINE {
            return Err(protocol("too big inline request"));
        }
        return Ok(None);
    };
    if newline > MAX_INLINE {
        return Err(protocol("too big inline request"));
    }
    let line = buf.split_to(newline + 1);
    let line = line.strip_suffix(b"\n").unwrap_or(&line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    split_inline(line).map(Some)
}

/// Splits an inline command into arguments: whitespace separates them; "double quotes"
/// take `\n \r \t \\ \" \xHH` escapes, 'single quotes' take `\'` only (Redis's rules).
fn split_inline(line: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    while i < line.len() {
        if line[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let mut arg = Vec::new();
        match line[i] {
            quote @ (b'"' | b'\'') => {
                i += 1;
                loop {
                    let Some(&byte) = line.get(i) else {
                        return Err(protocol("unbalanced quotes in request"));
                    };
                    i += 1;
                    match byte {
                        b'\\' if quote == b'"' => {
                            let (decoded, used) = unescape(&line[i..]);
                            arg.push(decoded);
                            i += used;
                        }
                        b'\\' if line.get(i) == Some(&b'\'') => {
                            arg.push(b'\'');
                            i += 1;
                        }
                        b if b == quote => break,
                        b => arg.push(b),
                    }
                }
                // A closing quote must be followed by a space or the end.
                if line.get(i).is_some_and(|b| !b.is_ascii_whitespace()) {
                    return Err(protocol("unbalanced quotes in request"));
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    arg.push(line[i]);
                    i += 1;
                }
            }
        }
        args.push(Bytes::from(arg));
    }
    Ok(args)
}

/// One escape after a backslash in double quotes: the byte and how many bytes it used.
fn unescape(rest: &[u8]) -> (u8, usize) {
    match rest {
        [b'x', hi, lo, ..] if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
            let hex = |b: u8| u8::try_from(char::from(b).to_digit(16).unwrap_or(0)).unwrap_or(0);
            (hex(*hi) << 4 | hex(*lo), 3)
        }
        [b'n', ..] => (b'\n', 1),
        [b'r', ..] => (b'\r', 1),
        [b't', ..] => (b'\t', 1),
        [b'b', ..] => (8, 1),
        [b'a', ..] => (7, 1),
        [other, ..] => (*other, 1),
        [] => (b'\\', 0),
    }
}

/// A decimal integer with an optional minus sign and nothing else (Redis's `string2ll`).
pub fn parse_i64(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 19 || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    let mut value: i64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        value = value
            .checked_mul(10)?
            .checked_add(i64::from(digit - b'0'))?;
    }
    Some(if negative { -value } else { value })
}

/// Replies written into a connection's output buffer, in the protocol the client chose.
#[derive(Debug)]
pub struct Reply<'a> {
    pub out: &'a mut BytesMut,
    pub resp3: bool,
}

impl Reply<'_> {
    pub fn ok(&mut self) {
        self.out.put_slice(b"+OK\r\n");
    }

    pub fn simple(&mut self, text: &str) {
        self.line(b'+', text.as_bytes());
    }

    /// An error: `text` starts with its code (`ERR`, `WRONGTYPE`, `TRYAGAIN`, …). Line
    /// breaks would end the reply early, so they become spaces.
    pub fn error(&mut self, text: &str) {
        self.out.put_u8(b'-');
        for byte in text.bytes() {
            self.out.put_u8(if byte == b'\r' || byte == b'\n' {
                b' '
            } else {
                byte
            });
        }
        self.out.put_slice(b"\r\n");
    }

    pub fn int(&mut self, value: i64) {
        self.out.put_u8(b':');
        self.out.put_slice(itoa(value, &mut [0; 20]));
        self.out.put_slice(b"\r\n");
    }

    pub fn bulk(&mut self, data: &[u8]) {
        self.out.reserve(data.len() + 16);
        self.out.put_u8(b'$');
        self.out.put_slice(itoa(data.len() as i64, &mut [0; 20]));
        self.out.put_slice(b"\r\n");
        self.out.put_slice(data);
        self.out.put_slice(b"\r\n");
    }

    /// A value, or null when there is none.
    pub fn value(&mut self, data: Option<&[u8]>) {
        match data {
            Some(data) => self.bulk(data),
            None => self.null(),
        }
    }

    /// A text blob a person reads (INFO, CLUSTER NODES): verbatim in RESP3.
    pub fn text(&mut self, text: &str) {
        if self.resp3 {
            self.out.put_u8(b'=');
            self.out
                .put_slice(itoa(text.len() as i64 + 4, &mut [0; 20]));
            self.out.put_slice(b"\r\ntxt:");
            self.out.put_slice(text.as_bytes());
            self.out.put_slice(b"\r\n");
        } else {
            self.bulk(text.as_bytes());
        }
    }

    pub fn null(&mut self) {
        self.out
            .put_slice(if self.resp3 { b"_\r\n" } else { b"$-1\r\n" });
    }

    pub fn array(&mut self, len: usize) {
        self.line(b'*', itoa(len as i64, &mut [0; 20]));
    }

    /// A map of `len` pairs: an array of `2 × len` items in RESP2.
    pub fn map(&mut self, len: usize) {
        if self.resp3 {
            self.line(b'%', itoa(len as i64, &mut [0; 20]));
        } else {
            self.array(len * 2);
        }
    }

    fn line(&mut self, kind: u8, body: &[u8]) {
        self.out.put_u8(kind);
        self.out.put_slice(body);
        self.out.put_slice(b"\r\n");
    }
}

/// Formats `value` in decimal into `buf` without allocating.
fn itoa(value: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    let mut rest = value.unsigned_abs();
    loop {
        at -= 1;
        buf[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if value < 0 {
        at -= 1;
        buf[at] = b'-';
    }
    &buf[at..]
}

#[cfg(test)]
mod tests;
