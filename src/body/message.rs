//! Stored message records, the bodies of QUERY_MESSAGE, PULL_MESSAGE and
//! VIEW_MESSAGE_BY_ID: Java's `MessageDecoder` layout, V1 (`0xDAA320A7`, 1-byte
//! topic length) and V2 (`0xDAA320AB`, 2-byte topic length), IPv4 or IPv6
//! born/store hosts, and the `name\x01value\x02` properties string.
//!
//! Every length is checked against the record's own `TOTALSIZE` and the bytes
//! present before use, so a lying length is an error, not an overread.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;

use super::BodyError;

const MAGIC_V1: u32 = 0xDAA3_20A7;
const MAGIC_V2: u32 = 0xDAA3_20AB;
const SYSFLAG_COMPRESSED: i32 = 0x1;
const SYSFLAG_BORNHOST_V6: i32 = 0x10;
const SYSFLAG_STOREHOST_V6: i32 = 0x20;

/// Property separator between a name and its value.
pub const NAME_VALUE_SEPARATOR: char = '\u{1}';
/// Property separator after each value.
pub const PROPERTY_SEPARATOR: char = '\u{2}';

/// One message as the broker stored it.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRecord {
    /// Queue within the topic on the storing broker.
    pub queue_id: i32,
    /// Position in the consume queue (the "offset" consumers commit).
    pub queue_offset: i64,
    /// Byte position in the commit log.
    pub commit_log_offset: i64,
    /// `MessageSysFlag` bits (compression, transaction type, IPv6 hosts).
    pub sys_flag: i32,
    /// Producer-side creation time, epoch ms.
    pub born_timestamp: i64,
    /// Producer address.
    pub born_host: SocketAddr,
    /// Broker-side store time, epoch ms.
    pub store_timestamp: i64,
    /// Broker address that stored it (part of the offset message id).
    pub store_host: SocketAddr,
    /// Delivery attempts so far (retry and DLQ copies count up).
    pub reconsume_times: i32,
    /// Transaction bookkeeping offset.
    pub prepared_transaction_offset: i64,
    /// Body bytes as stored (still compressed when [`MessageRecord::is_compressed`]).
    pub body: Bytes,
    /// Topic it is stored under (`%RETRY%g`, `%DLQ%g` for copies).
    pub topic: String,
    /// Message properties (`KEYS`, `UNIQ_KEY`, `TAGS`, `RETRY_TOPIC`, ...).
    pub properties: BTreeMap<String, String>,
}

impl MessageRecord {
    /// The space-separated `KEYS` property, split.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.properties
            .get("KEYS")
            .map(String::as_str)
            .unwrap_or("")
            .split(' ')
            .filter(|k| !k.is_empty())
    }

    /// The client-side message id (`UNIQ_KEY`), which trace records call `msgId`.
    pub fn uniq_key(&self) -> Option<&str> {
        self.properties.get("UNIQ_KEY").map(String::as_str)
    }

    /// True when the body is compressed (sysFlag bit 0).
    pub fn is_compressed(&self) -> bool {
        self.sys_flag & SYSFLAG_COMPRESSED != 0
    }

    /// The body as the producer wrote it: inflated when compressed (Java
    /// producers zlib-compress large bodies, trace batches among them), at
    /// most `limit` bytes.
    ///
    /// # Errors
    /// A compressed body that does not inflate, or inflates past `limit`.
    pub fn uncompressed_body(&self, limit: usize) -> Result<std::borrow::Cow<'_, [u8]>, BodyError> {
        use std::io::Read;
        if !self.is_compressed() {
            return Ok(std::borrow::Cow::Borrowed(&self.body[..]));
        }
        let mut inflated = Vec::new();
        flate2::read::ZlibDecoder::new(&self.body[..])
            .take(limit as u64 + 1)
            .read_to_end(&mut inflated)
            .map_err(|e| BodyError::new("compressed message body", e.to_string()))?;
        if inflated.len() > limit {
            return Err(BodyError::new(
                "compressed message body",
                format!("inflates past {limit} bytes"),
            ));
        }
        Ok(std::borrow::Cow::Owned(inflated))
    }

    /// The broker's message id: hex of store host address, port and
    /// commit-log offset (Java `MessageDecoder.createMessageId`).
    pub fn offset_msg_id(&self) -> String {
        let mut bytes = Vec::with_capacity(28);
        match self.store_host.ip() {
            IpAddr::V4(ip) => bytes.extend_from_slice(&ip.octets()),
            IpAddr::V6(ip) => bytes.extend_from_slice(&ip.octets()),
        }
        bytes.extend_from_slice(&i32::from(self.store_host.port()).to_be_bytes());
        bytes.extend_from_slice(&self.commit_log_offset.to_be_bytes());
        bytes.iter().map(|b| format!("{b:02X}")).collect()
    }
}

/// Decode every record in a body. Java's decoder stops silently at the first
/// bad record; we report it, because a half-read body is a wrong answer.
///
/// # Errors
/// On the first record that is truncated, has an unknown magic code, lengths
/// that overrun, or text that is not UTF-8.
pub fn decode_all(body: &[u8]) -> Result<Vec<MessageRecord>, BodyError> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let (record, used) = decode_one(&body[at..])
            .map_err(|e| e.context(&format!("message record at byte {at}")))?;
        records.push(record);
        at += used;
    }
    Ok(records)
}

/// Decode one record at the start of `buf`; returns it and its size.
///
/// # Errors
/// As [`decode_all`].
pub fn decode_one(buf: &[u8]) -> Result<(MessageRecord, usize), BodyError> {
    let mut r = Reader { buf, pos: 0 };
    let total = r.i32("TOTALSIZE")?;
    let total = usize::try_from(total)
        .ok()
        .filter(|&t| t >= 4 && t <= buf.len())
        .ok_or_else(|| {
            BodyError::new(
                "message",
                format!("TOTALSIZE {total} but {} bytes present", buf.len()),
            )
        })?;
    // From here on, read only inside this record.
    let mut r = Reader {
        buf: &buf[..total],
        pos: 4,
    };
    let magic = r.i32("MAGICCODE")? as u32;
    let v2 = match magic {
        MAGIC_V1 => false,
        MAGIC_V2 => true,
        other => {
            return Err(BodyError::new(
                "message",
                format!("unknown magic code 0x{other:08X}"),
            ));
        }
    };
    let _body_crc = r.i32("BODYCRC")?;
    let queue_id = r.i32("QUEUEID")?;
    let _flag = r.i32("FLAG")?;
    let queue_offset = r.i64("QUEUEOFFSET")?;
    let commit_log_offset = r.i64("PHYSICALOFFSET")?;
    let sys_flag = r.i32("SYSFLAG")?;
    let born_timestamp = r.i64("BORNTIMESTAMP")?;
    let born_host = r.host(sys_flag & SYSFLAG_BORNHOST_V6 != 0, "BORNHOST")?;
    let store_timestamp = r.i64("STORETIMESTAMP")?;
    let store_host = r.host(sys_flag & SYSFLAG_STOREHOST_V6 != 0, "STOREHOST")?;
    let reconsume_times = r.i32("RECONSUMETIMES")?;
    let prepared_transaction_offset = r.i64("PREPARED TRANSACTION OFFSET")?;
    let body_len = r.len_i32("BODY length")?;
    let body = Bytes::copy_from_slice(r.take(body_len, "BODY")?);
    let topic_len = if v2 {
        r.i16("TOPIC length")? as u16 as usize
    } else {
        // V1 topic length is a signed byte in Java; a "negative" length is corrupt.
        let len = r.take(1, "TOPIC length")?[0] as i8;
        usize::try_from(len)
            .map_err(|_| BodyError::new("message", format!("negative topic length {len}")))?
    };
    let topic = r.utf8(topic_len, "TOPIC")?;
    let props_len = r.i16("PROPERTIES length")? as u16 as usize;
    let properties = parse_properties(&r.utf8(props_len, "PROPERTIES")?);
    Ok((
        MessageRecord {
            queue_id,
            queue_offset,
            commit_log_offset,
            sys_flag,
            born_timestamp,
            born_host,
            store_timestamp,
            store_host,
            reconsume_times,
            prepared_transaction_offset,
            body,
            topic,
            properties,
        },
        total,
    ))
}

/// Parse `name\x01value\x02...`; segments without a separator or shorter than
/// 3 characters are skipped, as Java's `string2messageProperties` does.
pub fn parse_properties(text: &str) -> BTreeMap<String, String> {
    text.split(PROPERTY_SEPARATOR)
        .filter(|segment| segment.len() >= 3)
        .filter_map(|segment| segment.split_once(NAME_VALUE_SEPARATOR))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// Encode properties as Java's `messageProperties2String` does (used when
/// sending, e.g. by the test driver).
pub fn encode_properties(properties: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for (name, value) in properties {
        out.push_str(name);
        out.push(NAME_VALUE_SEPARATOR);
        out.push_str(value);
        out.push(PROPERTY_SEPARATOR);
    }
    out
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], BodyError> {
        match self.pos.checked_add(n).filter(|&end| end <= self.buf.len()) {
            Some(end) => {
                let slice = &self.buf[self.pos..end];
                self.pos = end;
                Ok(slice)
            }
            None => Err(BodyError::new(
                "message",
                format!(
                    "{what} needs {n} bytes at offset {} but the record has {}",
                    self.pos,
                    self.buf.len()
                ),
            )),
        }
    }

    fn i16(&mut self, what: &str) -> Result<i16, BodyError> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self, what: &str) -> Result<i32, BodyError> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i64(&mut self, what: &str) -> Result<i64, BodyError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    fn len_i32(&mut self, what: &str) -> Result<usize, BodyError> {
        let n = self.i32(what)?;
        usize::try_from(n).map_err(|_| BodyError::new("message", format!("negative {what} {n}")))
    }

    fn host(&mut self, v6: bool, what: &str) -> Result<SocketAddr, BodyError> {
        let ip = if v6 {
            let b = self.take(16, what)?;
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            IpAddr::V6(Ipv6Addr::from(a))
        } else {
            let b = self.take(4, what)?;
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        };
        let port = self.i32(what)?;
        let port = u16::try_from(port)
            .map_err(|_| BodyError::new("message", format!("{what} port {port} out of range")))?;
        Ok(SocketAddr::new(ip, port))
    }

    fn utf8(&mut self, n: usize, what: &str) -> Result<String, BodyError> {
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| BodyError::new("message", format!("{what} is not valid UTF-8")))
    }
}

/// Build a stored record in Java's layout. Used by tests and protocol fakes to
/// produce what a broker would send.
pub fn encode_record(record: &MessageRecord, v2: bool) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&(if v2 { MAGIC_V2 } else { MAGIC_V1 }).to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&record.queue_id.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&record.queue_offset.to_be_bytes());
    out.extend_from_slice(&record.commit_log_offset.to_be_bytes());
    let mut sys_flag = record.sys_flag & !(SYSFLAG_BORNHOST_V6 | SYSFLAG_STOREHOST_V6);
    if record.born_host.is_ipv6() {
        sys_flag |= SYSFLAG_BORNHOST_V6;
    }
    if record.store_host.is_ipv6() {
        sys_flag |= SYSFLAG_STOREHOST_V6;
    }
    out.extend_from_slice(&sys_flag.to_be_bytes());
    out.extend_from_slice(&record.born_timestamp.to_be_bytes());
    push_host(&mut out, record.born_host);
    out.extend_from_slice(&record.store_timestamp.to_be_bytes());
    push_host(&mut out, record.store_host);
    out.extend_from_slice(&record.reconsume_times.to_be_bytes());
    out.extend_from_slice(&record.prepared_transaction_offset.to_be_bytes());
    out.extend_from_slice(&(record.body.len() as i32).to_be_bytes());
    out.extend_from_slice(&record.body);
    if v2 {
        out.extend_from_slice(&(record.topic.len() as i16).to_be_bytes());
    } else {
        out.push(record.topic.len() as u8);
    }
    out.extend_from_slice(record.topic.as_bytes());
    let props = encode_properties(&record.properties);
    out.extend_from_slice(&(props.len() as i16).to_be_bytes());
    out.extend_from_slice(props.as_bytes());
    let total = out.len() as i32;
    out[..4].copy_from_slice(&total.to_be_bytes());
    out
}

fn push_host(out: &mut Vec<u8>, host: SocketAddr) {
    match host.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
    out.extend_from_slice(&i32::from(host.port()).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(store: &str) -> MessageRecord {
        let mut properties = BTreeMap::new();
        properties.insert("KEYS".to_string(), "order-1 order-2".to_string());
        properties.insert("UNIQ_KEY".to_string(), "7F0000010001".to_string());
        MessageRecord {
            queue_id: 3,
            queue_offset: 42,
            commit_log_offset: 0x229E_897C_F382,
            sys_flag: 0,
            born_timestamp: 1_700_000_000_000,
            born_host: "10.0.0.9:50000".parse().expect("addr"),
            store_timestamp: 1_700_000_000_005,
            store_host: store.parse().expect("addr"),
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: Bytes::from_static(b"payload"),
            topic: "Orders".to_string(),
            properties,
        }
    }

    #[test]
    fn v1_and_v2_ipv4_and_ipv6_round_trip() {
        for (store, v2) in [
            ("10.9.15.40:10911", false),
            ("10.9.15.40:10911", true),
            ("[2001:db8::1]:10911", false),
            ("[2001:db8::1]:10911", true),
        ] {
            let record = sample(store);
            let bytes = encode_record(&record, v2);
            let mut body = bytes.clone();
            body.extend_from_slice(&bytes);
            let back = decode_all(&body).expect("decodes");
            assert_eq!(back.len(), 2);
            let mut expected = record.clone();
            expected.sys_flag = back[0].sys_flag;
            assert_eq!(back[0], expected);
            assert_eq!(back[0].keys().collect::<Vec<_>>(), ["order-1", "order-2"]);
        }
    }

    #[test]
    fn offset_msg_id_matches_the_java_example() {
        // protocol notes §3.12: 10.9.15.40:10911 at 0x229E897CF382.
        assert_eq!(
            sample("10.9.15.40:10911").offset_msg_id(),
            "0A090F2800002A9F0000229E897CF382"
        );
    }

    #[test]
    fn every_truncation_and_lying_length_is_an_error() {
        let bytes = encode_record(&sample("10.9.15.40:10911"), false);
        for cut in 1..bytes.len() {
            assert!(decode_all(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut lying = bytes.clone();
        lying[..4].copy_from_slice(&(bytes.len() as i32 + 1).to_be_bytes());
        assert!(decode_all(&lying).is_err());
        let mut bad_magic = bytes.clone();
        bad_magic[4] = 0;
        assert!(
            decode_all(&bad_magic)
                .expect_err("bad magic")
                .to_string()
                .contains("magic")
        );
    }

    #[test]
    fn properties_skip_short_and_separatorless_segments() {
        let props = parse_properties("KEYS\u{1}a b\u{2}x\u{2}NOSEP\u{2}TAGS\u{1}t\u{2}");
        assert_eq!(props.len(), 2);
        assert_eq!(props["KEYS"], "a b");
        assert_eq!(props["TAGS"], "t");
    }
}
