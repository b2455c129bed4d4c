//! The RocketMQ `RemotingCommand` frame: bytes ⇄ [`Command`], with no I/O.
//!
//! Layout (all big-endian): `length:i32 | headerWord:i32 | header | body`, where
//! `length` counts everything after itself and `headerWord` carries the
//! serialize type in its high byte and the header length in its low 24 bits.
//! We always *encode* JSON headers; we *decode* both JSON and the ROCKETMQ
//! binary header, because Java brokers may answer either way regardless of
//! what was sent (protocol notes §1.6).
//!
//! Decoding never panics and never allocates more than the frame it was given:
//! every length read from the wire is checked against the bytes actually
//! present before it is used.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::Error;

/// Largest frame accepted or sent: Java's `NettyDecoder` default
/// (`com.rocketmq.remoting.frameMaxLength` = 16 MiB), so no real peer exceeds it.
pub const MAX_FRAME_LENGTH: usize = 16 * 1024 * 1024;

/// Protocol version we claim. 453 = V5_2_0: at or above V4_9_4 (401) so name
/// servers answer route queries in standard JSON, and below V5_3_1 (475),
/// above which a 5.3 server in its shutdown phase answers `GO_AWAY`.
pub const CLIENT_VERSION: i32 = 453;

/// Bit 0 of `flag`: the frame is a response.
const FLAG_RESPONSE: i32 = 1;
/// Bit 1 of `flag`: the request expects no response.
const FLAG_ONEWAY: i32 = 2;

/// How a frame's header was serialized (high byte of the header word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SerializeType {
    /// fastjson text header (type 0).
    Json,
    /// RocketMQ's compact binary header (type 1).
    RocketMq,
}

/// One remoting command, request or response.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// Request code in a request; response code in a response.
    pub code: i32,
    /// Sender's language name as it appears in JSON headers (`JAVA`, `RUST`, ...).
    pub language: String,
    /// Sender's `MQVersion` ordinal.
    pub version: i32,
    /// Request id; a response echoes its request's opaque.
    pub opaque: i32,
    /// Bit 0 response, bit 1 oneway.
    pub flag: i32,
    /// Human-readable error text in responses.
    pub remark: Option<String>,
    /// The custom header flattened to strings. Sorted so encoding is deterministic.
    pub ext_fields: BTreeMap<String, String>,
    /// Opaque body bytes; empty when the frame has none.
    pub body: Bytes,
    /// Which header encoding the frame arrived in (always JSON for frames we build).
    pub serialize_type: SerializeType,
}

impl Command {
    /// A request with the given code and header fields, no body.
    pub fn request(code: i32, ext_fields: BTreeMap<String, String>) -> Command {
        Command {
            code,
            language: "JAVA".to_string(),
            version: CLIENT_VERSION,
            opaque: 0,
            flag: 0,
            remark: None,
            ext_fields,
            body: Bytes::new(),
            serialize_type: SerializeType::Json,
        }
    }

    /// A response to `request` with the given code (used by fakes and by the
    /// client when it must refuse a server-initiated request).
    pub fn response_to(request: &Command, code: i32, remark: Option<String>) -> Command {
        Command {
            code,
            language: "JAVA".to_string(),
            version: CLIENT_VERSION,
            opaque: request.opaque,
            flag: FLAG_RESPONSE,
            remark,
            ext_fields: BTreeMap::new(),
            body: Bytes::new(),
            serialize_type: SerializeType::Json,
        }
    }

    /// Attach a body.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Command {
        self.body = body.into();
        self
    }

    /// True when this frame answers a request.
    pub fn is_response(&self) -> bool {
        self.flag & FLAG_RESPONSE != 0
    }

    /// True when the sender expects no answer.
    pub fn is_oneway(&self) -> bool {
        self.flag & FLAG_ONEWAY != 0
    }

    /// Mark the request as oneway (no response expected).
    pub fn set_oneway(&mut self) {
        self.flag |= FLAG_ONEWAY;
    }

    /// A header field, if present.
    pub fn ext(&self, name: &str) -> Option<&str> {
        self.ext_fields.get(name).map(String::as_str)
    }

    /// Append this command as one frame (JSON header) to `out`.
    ///
    /// # Errors
    /// `Protocol` when the encoded frame would exceed [`MAX_FRAME_LENGTH`],
    /// which a peer would reject anyway.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), Error> {
        let header = JsonHeaderOut {
            code: self.code,
            ext_fields: (!self.ext_fields.is_empty()).then_some(&self.ext_fields),
            flag: self.flag,
            language: &self.language,
            opaque: self.opaque,
            remark: self.remark.as_deref(),
            serialize_type_current_rpc: "JSON",
            version: self.version,
        };
        let header = serde_json::to_vec(&header)
            .map_err(|e| Error::protocol(format!("cannot encode header: {e}")))?;
        let length = 4 + header.len() + self.body.len();
        if length > MAX_FRAME_LENGTH || header.len() > 0x00FF_FFFF {
            return Err(Error::protocol(format!(
                "request frame of {length} bytes exceeds the {MAX_FRAME_LENGTH}-byte limit"
            )));
        }
        out.reserve(4 + length);
        // Both casts are in range: checked against the 16 MiB limit above.
        out.put_u32(length as u32);
        out.put_u32(header.len() as u32);
        out.put_slice(&header);
        out.put_slice(&self.body);
        Ok(())
    }

    /// Encode into a fresh buffer.
    ///
    /// # Errors
    /// As [`Command::encode`].
    pub fn to_bytes(&self) -> Result<Bytes, Error> {
        let mut out = BytesMut::new();
        self.encode(&mut out)?;
        Ok(out.freeze())
    }
}

/// Result of looking for one frame at the start of a buffer.
#[derive(Debug)]
pub enum Decoded {
    /// A complete frame and how many bytes it used.
    Frame(Command, usize),
    /// More bytes are needed; nothing is wrong yet.
    Incomplete,
}

/// Decode the first frame in `buf`, if it is complete.
///
/// # Errors
/// `Protocol` for anything a correct peer never sends: a length below the
/// header word, above the 16 MiB limit, a header length that overruns the
/// frame, an unknown serialize type, or a header that does not parse. The
/// connection cannot be resynchronised after such an error and must be closed.
pub fn decode(buf: &[u8]) -> Result<Decoded, Error> {
    let Some(length) = read_u32(buf, 0) else {
        return Ok(Decoded::Incomplete);
    };
    let length = length as usize;
    if length < 4 {
        return Err(Error::protocol(format!(
            "frame length {length} is shorter than its 4-byte header word"
        )));
    }
    if length > MAX_FRAME_LENGTH {
        return Err(Error::protocol(format!(
            "frame length {length} exceeds the {MAX_FRAME_LENGTH}-byte limit"
        )));
    }
    if buf.len() < 4 + length {
        return Ok(Decoded::Incomplete);
    }
    let frame = &buf[4..4 + length];
    let command = decode_frame_body(frame)?;
    Ok(Decoded::Frame(command, 4 + length))
}

/// Decode the part of a frame after the length field.
fn decode_frame_body(frame: &[u8]) -> Result<Command, Error> {
    let word = read_u32(frame, 0).ok_or_else(|| Error::protocol("frame lacks a header word"))?;
    let serialize = (word >> 24) as u8;
    let header_len = (word & 0x00FF_FFFF) as usize;
    let rest = &frame[4..];
    if header_len > rest.len() {
        return Err(Error::protocol(format!(
            "header length {header_len} overruns the frame ({} bytes left)",
            rest.len()
        )));
    }
    let (header, body) = rest.split_at(header_len);
    let mut command = match serialize {
        0 => decode_json_header(header)?,
        1 => decode_binary_header(header)?,
        other => {
            return Err(Error::protocol(format!("unknown serialize type {other}")));
        }
    };
    command.body = Bytes::copy_from_slice(body);
    Ok(command)
}

#[derive(Serialize)]
struct JsonHeaderOut<'a> {
    code: i32,
    #[serde(rename = "extFields", skip_serializing_if = "Option::is_none")]
    ext_fields: Option<&'a BTreeMap<String, String>>,
    flag: i32,
    language: &'a str,
    opaque: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    remark: Option<&'a str>,
    #[serde(rename = "serializeTypeCurrentRPC")]
    serialize_type_current_rpc: &'a str,
    version: i32,
}

#[derive(Deserialize)]
struct JsonHeaderIn {
    code: i32,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    version: i32,
    #[serde(default)]
    opaque: i32,
    #[serde(default)]
    flag: i32,
    #[serde(default)]
    remark: Option<String>,
    #[serde(rename = "extFields", default)]
    ext_fields: Option<BTreeMap<String, serde_json::Value>>,
}

fn decode_json_header(header: &[u8]) -> Result<Command, Error> {
    let parsed: JsonHeaderIn = serde_json::from_slice(header)
        .map_err(|e| Error::protocol(format!("JSON header does not parse: {e}")))?;
    let mut ext_fields = BTreeMap::new();
    for (key, value) in parsed.ext_fields.unwrap_or_default() {
        // Java always writes strings; accept scalars from other peers verbatim.
        let text = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Null => continue,
            other => other.to_string(),
        };
        ext_fields.insert(key, text);
    }
    Ok(Command {
        code: parsed.code,
        language: parsed.language.unwrap_or_else(|| "UNKNOWN".to_string()),
        version: parsed.version,
        opaque: parsed.opaque,
        flag: parsed.flag,
        remark: parsed.remark,
        ext_fields,
        body: Bytes::new(),
        serialize_type: SerializeType::Json,
    })
}

/// `LanguageCode` byte → name, as Java's enum defines them.
fn language_name(code: u8) -> String {
    const NAMES: [&str; 14] = [
        "JAVA", "CPP", "DOTNET", "PYTHON", "DELPHI", "ERLANG", "RUBY", "OTHER", "HTTP", "GO",
        "PHP", "OMS", "RUST", "NODE_JS",
    ];
    NAMES
        .get(code as usize)
        .map_or_else(|| format!("UNKNOWN_{code}"), |s| (*s).to_string())
}

fn decode_binary_header(header: &[u8]) -> Result<Command, Error> {
    let mut cursor = Cursor {
        buf: header,
        pos: 0,
    };
    let code = i32::from(cursor.i16("code")?);
    let language = language_name(cursor.u8("language")?);
    let version = i32::from(cursor.i16("version")?);
    let opaque = cursor.i32("opaque")?;
    let flag = cursor.i32("flag")?;
    let remark_len = cursor.len_i32("remark length")?;
    let remark = cursor.string(remark_len, "remark")?;
    let ext_len = cursor.len_i32("extFields length")?;
    let ext_bytes = cursor.take(ext_len, "extFields")?;
    let mut ext = Cursor {
        buf: ext_bytes,
        pos: 0,
    };
    let mut ext_fields = BTreeMap::new();
    while ext.pos < ext.buf.len() {
        let key_len = ext.i16("extFields key length")?;
        let key_len = usize::try_from(key_len)
            .map_err(|_| Error::protocol("negative extFields key length"))?;
        let key = ext.string(key_len, "extFields key")?;
        let val_len = ext.len_i32("extFields value length")?;
        let value = ext.string(val_len, "extFields value")?;
        // Java's readStr turns a zero length into null and skips null entries.
        if let (Some(key), Some(value)) = (key, value) {
            ext_fields.insert(key, value);
        }
    }
    Ok(Command {
        code,
        language,
        version,
        opaque,
        flag,
        remark,
        ext_fields,
        body: Bytes::new(),
        serialize_type: SerializeType::RocketMq,
    })
}

/// Bounds-checked big-endian reader over a header.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Error> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.buf.len());
        let Some(end) = end else {
            return Err(Error::protocol(format!(
                "binary header truncated reading {what}: need {n} bytes, {} left",
                self.buf.len() - self.pos
            )));
        };
        let slice = &self.buf[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn u8(&mut self, what: &str) -> Result<u8, Error> {
        Ok(self.take(1, what)?[0])
    }

    fn i16(&mut self, what: &str) -> Result<i16, Error> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self, what: &str) -> Result<i32, Error> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An `int32` length that must be non-negative.
    fn len_i32(&mut self, what: &str) -> Result<usize, Error> {
        let n = self.i32(what)?;
        usize::try_from(n).map_err(|_| Error::protocol(format!("negative {what} {n}")))
    }

    /// A UTF-8 string of `n` bytes; `None` for zero length (Java `readStr`).
    fn string(&mut self, n: usize, what: &str) -> Result<Option<String>, Error> {
        let bytes = self.take(n, what)?;
        if bytes.is_empty() {
            return Ok(None);
        }
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| Error::protocol(format!("{what} is not valid UTF-8")))
    }
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(command: &Command) -> Vec<u8> {
        command.to_bytes().expect("small frame encodes").to_vec()
    }

    #[test]
    fn json_round_trip_keeps_every_field() {
        let mut ext = BTreeMap::new();
        ext.insert("topic".to_string(), "T\u{1}x".to_string());
        let mut request = Command::request(105, ext).with_body(&b"body"[..]);
        request.opaque = 77;
        request.remark = Some("hi".to_string());
        let bytes = frame(&request);
        let Decoded::Frame(back, used) = decode(&bytes).expect("decodes") else {
            panic!("complete frame reported incomplete");
        };
        assert_eq!(used, bytes.len());
        assert_eq!(back, request);
    }

    #[test]
    fn every_proper_prefix_is_incomplete() {
        let bytes = frame(&Command::request(28, BTreeMap::new()).with_body(&b"xyz"[..]));
        for cut in 0..bytes.len() {
            assert!(
                matches!(decode(&bytes[..cut]), Ok(Decoded::Incomplete)),
                "prefix of {cut} bytes"
            );
        }
    }

    #[test]
    fn oversize_length_is_rejected_before_any_allocation() {
        let err = decode(&[0xFF, 0xFF, 0xFF, 0xFF]).expect_err("oversize");
        assert_eq!(err.kind(), "protocol");
        assert!(err.to_string().contains("exceeds"), "{err}");
    }

    #[test]
    fn header_length_that_lies_is_rejected() {
        // length 8: header word says 100 bytes of header, only 4 present.
        let bytes = [0, 0, 0, 8, 0, 0, 0, 100, b'{', b'}', 0, 0];
        let err = decode(&bytes).expect_err("lying header length");
        assert!(err.to_string().contains("overruns"), "{err}");
    }

    #[test]
    fn length_below_header_word_is_rejected() {
        let err = decode(&[0, 0, 0, 2, 0, 0]).expect_err("too short");
        assert!(err.to_string().contains("shorter"), "{err}");
    }

    #[test]
    fn unknown_serialize_type_is_rejected() {
        let err = decode(&[0, 0, 0, 4, 7, 0, 0, 0]).expect_err("type 7");
        assert!(err.to_string().contains("serialize type 7"), "{err}");
    }

    #[test]
    fn invalid_utf8_in_binary_remark_is_an_error() {
        // code 0, lang 0, version 0, opaque 1, flag 1, remark len 2 = FF FE, ext 0
        let mut header = vec![
            0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0xFF, 0xFE,
        ];
        header.extend_from_slice(&[0, 0, 0, 0]);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&((4 + header.len()) as u32).to_be_bytes());
        bytes.extend_from_slice(&(0x0100_0000u32 | header.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&header);
        let err = decode(&bytes).expect_err("bad utf8");
        assert!(err.to_string().contains("UTF-8"), "{err}");
    }

    #[test]
    fn ext_field_lengths_that_overrun_are_rejected() {
        // ext map claims a 5-byte key but holds 1 byte.
        let mut header = vec![0u8; 17];
        header.extend_from_slice(&3u32.to_be_bytes()); // ext len 3
        header.extend_from_slice(&[0, 5, b'k']);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&((4 + header.len()) as u32).to_be_bytes());
        bytes.extend_from_slice(&(0x0100_0000u32 | header.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&header);
        let err = decode(&bytes).expect_err("overrun");
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}
