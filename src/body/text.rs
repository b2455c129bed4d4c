//! The text formats inside broker bodies: broker config lines, and the
//! formatted strings of the runtime `KVTable` (human byte counts, TPS triples,
//! disk capacity).
//!
//! The official exporter keeps only the number of `"1.2 GiB"` and drops the
//! unit; every function here honours units and rejects what it cannot read.

use std::collections::BTreeMap;

use super::BodyError;

/// A broker's configuration (GET_BROKER_CONFIG body).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Every `key → value` read, values verbatim (no unescaping, as the
    /// protocol notes advise against Java `Properties.load` semantics).
    pub entries: BTreeMap<String, String>,
    /// Non-blank lines that had no separator; kept as a count so one odd line
    /// does not hide `brokerRole` and `flushDiskType`.
    pub malformed_lines: usize,
}

impl BrokerConfig {
    /// A value by key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// The controllers (`controllerAddr`, `;`-separated) of a 5.x broker
    /// with `enableControllerMode=true`; empty otherwise.
    pub fn controller_addrs(&self) -> Vec<&str> {
        if self.get("enableControllerMode") != Some("true") {
            return Vec::new();
        }
        self.get("controllerAddr")
            .unwrap_or("")
            .split(';')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .collect()
    }
}

/// Parse broker config text: Java writes `key=value`, rocketmq-rust
/// `key:value`, `mqadmin` prints `key = value`. Each line splits at the first
/// `=` or `:`, whichever comes first (keys contain neither; values may, as in
/// `namesrvAddr=10.0.0.1:9876`).
///
/// # Errors
/// When the body is not UTF-8, or has content but not one readable entry.
pub fn parse_broker_config(body: &[u8]) -> Result<BrokerConfig, BodyError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        BodyError::new(
            "broker config",
            format!("not valid UTF-8 at byte {}", e.valid_up_to()),
        )
    })?;
    let mut config = BrokerConfig::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.find(['=', ':']) {
            Some(at) if at > 0 => {
                let key = line[..at].trim();
                let value = line[at + 1..].trim();
                config.entries.insert(key.to_string(), value.to_string());
            }
            _ => config.malformed_lines += 1,
        }
    }
    if config.entries.is_empty() && config.malformed_lines > 0 {
        return Err(BodyError::new(
            "broker config",
            format!(
                "none of {} lines is `key=value` or `key:value`",
                config.malformed_lines
            ),
        ));
    }
    Ok(config)
}

/// Parse a human-readable byte count as Java's `MixAll.humanReadableByteCount(n, false)`
/// writes it: `"0 B"`, `"1.1 KiB"`, `"299.3 GiB"`, with `,` accepted as the
/// decimal separator (the JVM's locale decides). Units are powers of 1024; SI
/// spellings (`KB`, `MB`) are read as the same powers, since that is what
/// brokers mean by them.
///
/// # Errors
/// When the number or the unit cannot be read, or the value is negative.
pub fn parse_human_bytes(text: &str) -> Result<u64, BodyError> {
    let bad = |why: &str| BodyError::new("byte count", format!("{why} in {text:?}"));
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ',' || c == '-'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: f64 = number
        .replace(',', ".")
        .parse()
        .map_err(|_| bad("no number"))?;
    if !number.is_finite() || number < 0.0 {
        return Err(bad("negative or non-finite number"));
    }
    let power = match unit.trim() {
        "" | "B" => 0,
        "KiB" | "KB" | "K" => 1,
        "MiB" | "MB" | "M" => 2,
        "GiB" | "GB" | "G" => 3,
        "TiB" | "TB" | "T" => 4,
        "PiB" | "PB" | "P" => 5,
        "EiB" | "EB" | "E" => 6,
        _ => return Err(bad("unknown unit")),
    };
    let bytes = number * 1024f64.powi(power);
    if bytes > u64::MAX as f64 {
        return Err(bad("value beyond 2^64"));
    }
    Ok(bytes.round() as u64)
}

/// A broker TPS triple: rates over the last 10 s, 60 s and 600 s. A window
/// is `None` until the broker has enough samples (it prints an empty string).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Tps {
    /// Rate over the last 10 seconds.
    pub last_10s: Option<f64>,
    /// Rate over the last minute.
    pub last_60s: Option<f64>,
    /// Rate over the last 10 minutes.
    pub last_600s: Option<f64>,
}

/// Parse `"a b c"` (Java prints `Double.toString`; rocketmq-rust may print
/// integers; components may be empty, giving runs of spaces).
///
/// # Errors
/// When there are more than three components or one is not a number.
pub fn parse_tps(text: &str) -> Result<Tps, BodyError> {
    // split(' ') keeps empty components: "0.0  " is 10s present, others empty.
    let parts: Vec<&str> = text.split(' ').collect();
    if parts.len() > 3 && parts[3..].iter().any(|p| !p.is_empty()) {
        return Err(BodyError::new(
            "TPS",
            format!("more than three rates in {text:?}"),
        ));
    }
    let mut values = [None; 3];
    for (slot, part) in values.iter_mut().zip(parts.iter()) {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let rate: f64 = part
            .replace(',', ".")
            .parse()
            .map_err(|_| BodyError::new("TPS", format!("{part:?} is not a rate in {text:?}")))?;
        *slot = Some(rate);
    }
    Ok(Tps {
        last_10s: values[0],
        last_60s: values[1],
        last_600s: values[2],
    })
}

/// Parse `commitLogDirCapacity`: `"Total : 299.3 GiB, Free : 276.1 GiB."` into
/// `(total_bytes, free_bytes)`.
///
/// # Errors
/// When the text does not have that shape.
pub fn parse_dir_capacity(text: &str) -> Result<(u64, u64), BodyError> {
    let bad = || BodyError::new("commitLogDirCapacity", format!("unexpected text {text:?}"));
    let rest = text.trim().strip_prefix("Total").ok_or_else(bad)?;
    let rest = rest.trim_start().strip_prefix(':').ok_or_else(bad)?;
    let (total, free) = rest.split_once(", Free").ok_or_else(bad)?;
    let free = free.trim_start().strip_prefix(':').ok_or_else(bad)?;
    let free = free.trim().trim_end_matches('.');
    Ok((parse_human_bytes(total)?, parse_human_bytes(free)?))
}

/// Parse a decimal that may use a locale comma (`putLatency99` is `%.2f`).
///
/// # Errors
/// When the text is not a number.
pub fn parse_decimal(text: &str) -> Result<f64, BodyError> {
    text.trim()
        .replace(',', ".")
        .parse()
        .map_err(|_| BodyError::new("number", format!("{text:?} is not a number")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_honour_units_and_locale_comma() {
        assert_eq!(parse_human_bytes("0 B"), Ok(0));
        assert_eq!(parse_human_bytes("1023 B"), Ok(1023));
        assert_eq!(parse_human_bytes("1.1 KiB"), Ok(1126));
        assert_eq!(parse_human_bytes("1,5 MiB"), Ok(1_572_864));
        assert_eq!(parse_human_bytes("1.2 GiB"), Ok(1_288_490_189));
        assert_eq!(parse_human_bytes("299.3 GiB"), Ok(321_370_927_923));
        assert_ne!(parse_human_bytes("1.2 KiB"), parse_human_bytes("1.2 GiB"));
        for bad in ["", "KiB", "1.2 XiB", "-1 B", "abc", "1..2 B", "NaN B"] {
            assert!(parse_human_bytes(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tps_triples_allow_empty_windows() {
        let tps = parse_tps("0 382.66 38.55").expect("rust form");
        assert_eq!(
            (tps.last_10s, tps.last_60s, tps.last_600s),
            (Some(0.0), Some(382.66), Some(38.55))
        );
        let early = parse_tps("0.0  ").expect("early form");
        assert_eq!(
            (early.last_10s, early.last_60s, early.last_600s),
            (Some(0.0), None, None)
        );
        assert!(parse_tps("1 2 3 4").is_err());
        assert!(parse_tps("x y z").is_err());
    }

    #[test]
    fn broker_config_accepts_both_separators_and_keeps_colons_in_values() {
        let java = parse_broker_config(b"brokerRole=ASYNC_MASTER\nnamesrvAddr=10.0.0.1:9876\n")
            .expect("java");
        assert_eq!(java.get("brokerRole"), Some("ASYNC_MASTER"));
        assert_eq!(java.get("namesrvAddr"), Some("10.0.0.1:9876"));
        let rust = parse_broker_config(b"flushDiskType:SYNC_FLUSH\nnamesrvAddr:127.0.0.1:9876\n")
            .expect("rust");
        assert_eq!(rust.get("flushDiskType"), Some("SYNC_FLUSH"));
        assert_eq!(rust.get("namesrvAddr"), Some("127.0.0.1:9876"));
        let mixed = parse_broker_config(b"a=1\njunk line\n").expect("mixed");
        assert_eq!(mixed.malformed_lines, 1);
        assert!(parse_broker_config(b"junk\nmore junk").is_err());
        assert!(parse_broker_config(b"\xff=\xfe").is_err());
    }

    #[test]
    fn dir_capacity_reads_both_numbers() {
        let (total, free) =
            parse_dir_capacity("Total : 299.3 GiB, Free : 276.1 GiB.").expect("parses");
        assert_eq!(total, parse_human_bytes("299.3 GiB").expect("n"));
        assert_eq!(free, parse_human_bytes("276.1 GiB").expect("n"));
        assert!(parse_dir_capacity("Total 1").is_err());
    }
}
