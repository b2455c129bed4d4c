//! One tolerant JSON reader for the three dialects RocketMQ peers write:
//!
//! * standard JSON (rocketmq-rust, Java route data with `BrowserCompatible`);
//! * fastjson map keys written bare: numbers (`{0:"10.0.0.1:10911"}`) and
//!   whole objects (`{{"brokerName":"b","queueId":0,"topic":"T"}:{...}}`);
//! * keys that are JSON inside a string (rocketmq-rust `GET_TOPIC_STATS_INFO`:
//!   `{"{\"topic\":\"T\",...}":{...}}`).
//!
//! It is a real tokenizer, not a rewrite: key text is never pattern-matched,
//! so a string value like `"a\"b:{0:"` cannot confuse it. Output is a
//! `serde_json::Value` in which every key is a string: a bare number key
//! keeps its text, an object key becomes its compact JSON text. Maps keyed by
//! `MessageQueue` are then read with [`message_queue_map`], which parses each
//! key again, so the fastjson and JSON-in-a-string forms come out identical.
//!
//! Limits: nesting deeper than [`MAX_DEPTH`] is an error (no stack overflow on
//! hostile input); output size is proportional to the input.

use serde::de::DeserializeOwned;
use serde_json::{Map, Number, Value};

use super::BodyError;

/// Deepest nesting accepted. Real bodies nest at most 5 levels.
pub const MAX_DEPTH: usize = 64;

/// Parse a body in any of the three dialects.
///
/// # Errors
/// `BodyError` naming the byte offset and what was expected.
pub fn parse(input: &[u8]) -> Result<Value, BodyError> {
    let text = std::str::from_utf8(input).map_err(|e| {
        BodyError::new(
            "JSON",
            format!("not valid UTF-8 at byte {}", e.valid_up_to()),
        )
    })?;
    let mut reader = Reader {
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
    reader.skip_ws();
    let value = reader.value(0)?;
    reader.skip_ws();
    if reader.pos != reader.bytes.len() {
        return Err(reader.error("end of input after the top-level value"));
    }
    Ok(value)
}

/// Parse a body and deserialize it into `T` (field names as Java writes them).
///
/// # Errors
/// As [`parse`], or when the shape does not match `T`.
pub fn parse_as<T: DeserializeOwned>(input: &[u8], what: &'static str) -> Result<T, BodyError> {
    let value = parse(input).map_err(|e| e.context(what))?;
    serde_json::from_value(value).map_err(|e| BodyError::new(what, e.to_string()))
}

/// Read a map whose keys are `MessageQueue`s, in any of the three encodings
/// (fastjson object keys, JSON-in-a-string keys, or gson-style `[[key, value], ...]`).
///
/// # Errors
/// When a key is not a `MessageQueue` or a value does not fit `T`.
pub fn message_queue_map<T: DeserializeOwned>(
    value: &Value,
    what: &'static str,
) -> Result<Vec<(MessageQueue, T)>, BodyError> {
    let decode_key = |key: &Value| -> Result<MessageQueue, BodyError> {
        let key = match key {
            Value::String(text) => parse(text.as_bytes()).map_err(|e| e.context(what))?,
            other => other.clone(),
        };
        serde_json::from_value(key)
            .map_err(|e| BodyError::new(what, format!("map key is not a MessageQueue: {e}")))
    };
    let decode_value = |v: &Value| -> Result<T, BodyError> {
        serde_json::from_value(v.clone()).map_err(|e| BodyError::new(what, e.to_string()))
    };
    match value {
        Value::Object(map) => map
            .iter()
            .map(|(key, v)| Ok((decode_key(&Value::String(key.clone()))?, decode_value(v)?)))
            .collect(),
        Value::Array(pairs) => pairs
            .iter()
            .map(|pair| match pair.as_array().map(Vec::as_slice) {
                Some([key, v]) => Ok((decode_key(key)?, decode_value(v)?)),
                _ => Err(BodyError::new(
                    what,
                    "array entry is not a [key, value] pair",
                )),
            })
            .collect(),
        Value::Null => Ok(Vec::new()),
        _ => Err(BodyError::new(
            what,
            "offset table is neither an object nor an array",
        )),
    }
}

/// A queue: the key of every per-queue table.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "camelCase")]
pub struct MessageQueue {
    /// Topic the queue belongs to.
    pub topic: String,
    /// Broker group (broker name) holding the queue.
    pub broker_name: String,
    /// Queue index within the topic on that broker.
    pub queue_id: i32,
}

struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn error(&self, expected: &str) -> BodyError {
        let found = match self.bytes.get(self.pos) {
            Some(b) if b.is_ascii_graphic() => format!("'{}'", *b as char),
            Some(b) => format!("byte 0x{b:02x}"),
            None => "end of input".to_string(),
        };
        BodyError::new(
            "JSON",
            format!("expected {expected} at byte {}, found {found}", self.pos),
        )
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, byte: u8, expected: &str) -> Result<(), BodyError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(expected))
        }
    }

    fn check_depth(&self, depth: usize) -> Result<(), BodyError> {
        if depth > MAX_DEPTH {
            return Err(BodyError::new(
                "JSON",
                format!(
                    "nesting deeper than {MAX_DEPTH} levels at byte {}",
                    self.pos
                ),
            ));
        }
        Ok(())
    }

    fn value(&mut self, depth: usize) -> Result<Value, BodyError> {
        self.check_depth(depth)?;
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            _ => Err(self.error("a value")),
        }
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Value, BodyError> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error(word))
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, BodyError> {
        self.check_depth(depth)?;
        self.eat(b'{', "'{'")?;
        let mut map = Map::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(map));
        }
        loop {
            self.skip_ws();
            let key = self.key(depth)?;
            self.skip_ws();
            self.eat(b':', "':' after an object key")?;
            self.skip_ws();
            let value = self.value(depth + 1)?;
            map.insert(key, value);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(map));
                }
                _ => return Err(self.error("',' or '}' in an object")),
            }
        }
    }

    /// A key: a string, or (fastjson) a bare number or a whole object.
    fn key(&mut self, depth: usize) -> Result<String, BodyError> {
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.pos;
                self.number()?;
                Ok(self.text[start..self.pos].to_string())
            }
            Some(b'{') => {
                let key = self.object(depth + 1)?;
                Ok(key.to_string())
            }
            _ => Err(self.error("an object key")),
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, BodyError> {
        self.check_depth(depth)?;
        self.eat(b'[', "'['")?;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.error("',' or ']' in an array")),
            }
        }
    }

    fn number(&mut self) -> Result<Value, BodyError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let digits_start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        if self.pos == digits_start {
            return Err(self.error("a digit"));
        }
        let mut integral = true;
        if self.peek() == Some(b'.') {
            integral = false;
            self.pos += 1;
            let frac = self.pos;
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.pos += 1;
            }
            if self.pos == frac {
                return Err(self.error("a digit after '.'"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            integral = false;
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            let exp = self.pos;
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.pos += 1;
            }
            if self.pos == exp {
                return Err(self.error("a digit in the exponent"));
            }
        }
        let text = &self.text[start..self.pos];
        let number = if integral {
            text.parse::<i64>()
                .map(Number::from)
                .or_else(|_| text.parse::<u64>().map(Number::from))
                .ok()
        } else {
            None
        };
        let number = match number {
            Some(n) => n,
            None => text
                .parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .ok_or_else(|| BodyError::new("JSON", format!("number {text} is out of range")))?,
        };
        Ok(Value::Number(number))
    }

    fn string(&mut self) -> Result<String, BodyError> {
        self.eat(b'"', "'\"'")?;
        let mut out = String::new();
        loop {
            let run_start = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' {
                    break;
                }
                // Raw control characters are invalid JSON but appear in
                // message properties; keep them rather than fail the body.
                self.pos += 1;
            }
            out.push_str(&self.text[run_start..self.pos]);
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    self.escape(&mut out)?;
                }
                _ => return Err(self.error("closing '\"'")),
            }
        }
    }

    fn escape(&mut self, out: &mut String) -> Result<(), BodyError> {
        let Some(c) = self.peek() else {
            return Err(self.error("an escape character"));
        };
        self.pos += 1;
        match c {
            b'"' => out.push('"'),
            b'\\' => out.push('\\'),
            b'/' => out.push('/'),
            b'b' => out.push('\u{8}'),
            b'f' => out.push('\u{c}'),
            b'n' => out.push('\n'),
            b'r' => out.push('\r'),
            b't' => out.push('\t'),
            b'u' => {
                let high = self.hex4()?;
                let ch = if (0xD800..0xDC00).contains(&high) {
                    if !self.bytes[self.pos..].starts_with(b"\\u") {
                        return Err(self.error("a low surrogate after a high surrogate"));
                    }
                    self.pos += 2;
                    let low = self.hex4()?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return Err(self.error("a low surrogate"));
                    }
                    char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
                } else {
                    char::from_u32(high)
                };
                out.push(ch.ok_or_else(|| self.error("a valid \\u escape"))?);
            }
            _ => {
                self.pos -= 1;
                return Err(self.error("a valid escape character"));
            }
        }
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, BodyError> {
        let digits = self
            .bytes
            .get(self.pos..self.pos + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .ok_or_else(|| self.error("four hex digits"))?;
        self.pos += 4;
        Ok(digits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_json_parses_as_serde_json_would() {
        let text = br#"{"a":[1,-2,3.5,1e3,true,false,null],"b":{"c":"x\u00e9\n"}}"#;
        let ours = parse(text).expect("parses");
        let theirs: Value = serde_json::from_slice(text).expect("valid JSON");
        assert_eq!(ours, theirs);
    }

    #[test]
    fn bare_numeric_keys_keep_their_text() {
        let value = parse(br#"{"brokerAddrs":{0:"a:1",2:"b:2",-1:"c"}}"#).expect("parses");
        assert_eq!(value["brokerAddrs"]["0"], "a:1");
        assert_eq!(value["brokerAddrs"]["2"], "b:2");
        assert_eq!(value["brokerAddrs"]["-1"], "c");
    }

    #[test]
    fn object_keys_and_string_keys_give_the_same_message_queue() {
        let fastjson = br#"{"t":{{"brokerName":"b","queueId":3,"topic":"T"}:{"v":1}}}"#;
        let rust = br#"{"t":{"{\"topic\":\"T\",\"brokerName\":\"b\",\"queueId\":3}":{"v":1}}}"#;
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct V {
            v: i32,
        }
        let a: Vec<(MessageQueue, V)> =
            message_queue_map(&parse(fastjson).expect("fastjson")["t"], "t").expect("a");
        let b: Vec<(MessageQueue, V)> =
            message_queue_map(&parse(rust).expect("rust")["t"], "t").expect("b");
        assert_eq!(a, b);
        assert_eq!(a[0].0.queue_id, 3);
        assert_eq!(a[0].0.topic, "T");
    }

    #[test]
    fn tricky_string_values_do_not_confuse_the_key_reader() {
        let value = parse(br#"{"k":"a\"b:{0:","n":{1:"x"}}"#).expect("parses");
        assert_eq!(value["k"], "a\"b:{0:");
        assert_eq!(value["n"]["1"], "x");
    }

    #[test]
    fn garbage_is_an_error_with_a_position() {
        for bad in [
            &b""[..],
            b"{",
            b"{\"a\"",
            b"{\"a\":}",
            b"[1,]",
            b"{true:1}",
            b"\"\\x\"",
            b"\"\\ud800\"",
            b"1 2",
            b"-",
            b"1.",
            b"1e",
            b"nul",
            b"\xff\xfe",
            b"{\"a\":1e999999}",
        ] {
            let err = parse(bad).expect_err("must fail");
            assert!(err.to_string().contains("JSON"), "{err}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = "[".repeat(100_000);
        let err = parse(deep.as_bytes()).expect_err("too deep");
        assert!(err.to_string().contains("nesting"), "{err}");
        let deep_keys = "{".repeat(100_000);
        assert!(parse(deep_keys.as_bytes()).is_err());
    }

    #[test]
    fn surrogate_pairs_decode() {
        assert_eq!(
            parse(br#""\ud83d\ude00""#).expect("pair"),
            Value::String("😀".into())
        );
    }
}
