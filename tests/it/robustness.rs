//! Property tests for every decoder of untrusted bytes: the frame codec and
//! the body parsers. Inputs are random bytes and random mutations (bit flips,
//! truncations, splices, lying lengths) of valid inputs, from a seeded
//! generator so a failure is reproducible. Properties:
//!
//! * no decoder panics, whatever the input;
//! * a decoded frame never claims more bytes than it was given;
//! * valid inputs round-trip (frames, message records, trace records);
//! * on input that standard JSON accepts, the tolerant reader agrees with
//!   `serde_json` exactly (differential test).
//!
//! Case counts scale with `MQAUDIT_PROPERTY_CASES` (default 20,000 per
//! property; `scripts/test.sh` prints the totals).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;
use mqaudit::body::message::{self, MessageRecord};
use mqaudit::body::{json, text, trace};
use mqaudit::remoting::{Command, Decoded, decode};

/// SplitMix64: tiny, seedable, good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// Between 0 and `max - 1` random bytes.
    fn bytes_below(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max);
        self.bytes(n)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn cases() -> usize {
    std::env::var("MQAUDIT_PROPERTY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// Apply 1–4 random mutations.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !out.is_empty() => {
                let at = rng.below(out.len());
                out[at] ^= 1 << rng.below(8);
            }
            1 => out.truncate(rng.below(out.len() + 1)),
            2 if !out.is_empty() => {
                let at = rng.below(out.len());
                out[at] = *rng.pick(&[0u8, 0xFF, b'{', b'}', b'"', b':', b',', 0x01, 0x02, b'\\']);
            }
            3 => {
                let at = rng.below(out.len() + 1);
                let len = 1 + rng.below(8);
                let junk = rng.bytes(len);
                out.splice(at..at, junk);
            }
            4 if out.len() >= 4 => {
                // A lying 32-bit length somewhere (frames and records start with one).
                let at = rng.below(out.len() - 3);
                let value = *rng.pick(&[
                    0u32,
                    1,
                    3,
                    4,
                    0x7FFF_FFFF,
                    0xFFFF_FFFF,
                    16 * 1024 * 1024 + 1,
                ]);
                out[at..at + 4].copy_from_slice(&value.to_be_bytes());
            }
            _ => {
                let at = rng.below(out.len() + 1);
                out.truncate(at);
            }
        }
    }
    out
}

fn sample_frames() -> Vec<Vec<u8>> {
    let mut fields = BTreeMap::new();
    fields.insert("topic".to_string(), "T\u{1}x".to_string());
    fields.insert("queueId".to_string(), "3".to_string());
    let mut response = Command::request(0, fields.clone()).with_body(&b"{\"a\":1}"[..]);
    response.flag = 1;
    response.remark = Some("remark".to_string());
    let mut frames = vec![
        Command::request(105, fields)
            .to_bytes()
            .expect("encodes")
            .to_vec(),
        response.to_bytes().expect("encodes").to_vec(),
    ];
    // The real binary-header capture.
    let hex = "00000099010000950000000175000006280000000100000000000000800007717565756549640000000136000854524143455f4f4e0000000474727565000a4d53475f524547494f4e0000000d44656661756c74526567696f6e00056d73674964000000203041303930463238303030303241394630303030323239453839374346333832000b71756575654f66667365740000000736333739383831";
    frames.push(
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect(),
    );
    frames
}

#[test]
fn frame_decoder_never_panics_and_never_overclaims() {
    let mut rng = Rng(0x5EED_0001);
    let samples = sample_frames();
    let n = cases() * 5;
    let mut decoded = 0;
    for case in 0..n {
        let input = if case % 4 == 0 {
            let len = rng.below(64);
            rng.bytes(len)
        } else {
            let sample = samples[rng.below(samples.len())].clone();
            mutate(&mut rng, &sample)
        };
        if let Ok(Decoded::Frame(_, used)) = decode(&input) {
            assert!(
                used <= input.len(),
                "case {case}: used {used} of {}",
                input.len()
            );
            decoded += 1;
        }
    }
    for sample in &samples {
        assert!(matches!(decode(sample), Ok(Decoded::Frame(_, used)) if used == sample.len()));
    }
    eprintln!("frame decoder: {n} random/mutated cases, {decoded} still decoded as frames");
}

#[test]
fn frames_round_trip_for_random_commands() {
    let mut rng = Rng(0x5EED_0002);
    let n = cases();
    for _ in 0..n {
        let mut fields = BTreeMap::new();
        for _ in 0..rng.below(5) {
            let key = format!("k{}", rng.below(1000));
            let value: String = (0..rng.below(20))
                .map(|_| char::from_u32(1 + rng.below(0x2FF) as u32).unwrap_or('x'))
                .collect();
            fields.insert(key, value);
        }
        let mut command =
            Command::request(rng.below(1000) as i32, fields).with_body(rng.bytes_below(100));
        command.opaque = rng.next() as i32;
        command.flag = rng.below(4) as i32;
        let bytes = command.to_bytes().expect("encodes");
        match decode(&bytes).expect("valid frame decodes") {
            Decoded::Frame(back, used) => {
                assert_eq!(used, bytes.len());
                assert_eq!(back, command);
            }
            Decoded::Incomplete => panic!("complete frame reported incomplete"),
        }
    }
    eprintln!("frame round trip: {n} random commands");
}

const JSON_SAMPLES: &[&str] = &[
    r#"{"brokerAddrTable":{"b":{"brokerAddrs":{0:"1.2.3.4:10911",1:"x"},"brokerName":"b","cluster":"c"}},"clusterAddrTable":{"c":["b"]}}"#,
    r#"{"consumeTps":0.0,"offsetTable":{{"brokerName":"b","queueId":7,"topic":"t"}:{"brokerOffset":10,"consumerOffset":3,"lastTimestamp":0}}}"#,
    r#"{"offsetTable":{"{\"topic\":\"t\",\"brokerName\":\"b\",\"queueId\":0}":{"minOffset":0,"maxOffset":5}}}"#,
    r#"{"a":[1,-2.5e3,true,false,null,"s\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"],"b":{}}"#,
];

#[test]
fn json_reader_never_panics_and_agrees_with_serde_json_on_standard_json() {
    let mut rng = Rng(0x5EED_0003);
    let n = cases() * 2;
    let mut agreed = 0;
    for case in 0..n {
        let base = rng.pick(JSON_SAMPLES).as_bytes();
        let input = if case % 5 == 0 {
            rng.bytes_below(48)
        } else {
            mutate(&mut rng, base)
        };
        let ours = json::parse(&input);
        if let Ok(theirs) = serde_json::from_slice::<serde_json::Value>(&input) {
            // Standard JSON without raw control characters: must agree exactly.
            let ours = ours.unwrap_or_else(|e| {
                panic!(
                    "case {case}: serde accepts {:?}, we reject: {e}",
                    String::from_utf8_lossy(&input)
                )
            });
            assert_eq!(ours, theirs, "case {case}");
            agreed += 1;
        }
    }
    eprintln!("JSON reader: {n} cases, {agreed} standard-JSON inputs agreed with serde_json");
}

fn random_record(rng: &mut Rng) -> MessageRecord {
    let hosts = [
        "10.0.0.1:10911",
        "[2001:db8::7]:1",
        "127.0.0.1:65535",
        "[::1]:0",
    ];
    let mut properties = BTreeMap::new();
    for _ in 0..rng.below(4) {
        properties.insert(format!("P{}", rng.below(100)), format!("v{}", rng.next()));
    }
    MessageRecord {
        queue_id: rng.next() as i32,
        queue_offset: rng.next() as i64,
        commit_log_offset: rng.next() as i64,
        sys_flag: (rng.next() as i32) & 0x0F,
        born_timestamp: rng.next() as i64,
        born_host: rng.pick(&hosts).parse::<SocketAddr>().expect("addr"),
        store_timestamp: rng.next() as i64,
        store_host: rng.pick(&hosts).parse::<SocketAddr>().expect("addr"),
        reconsume_times: rng.below(20) as i32,
        prepared_transaction_offset: rng.next() as i64,
        body: Bytes::from(rng.bytes_below(64)),
        topic: format!("topic-{}", rng.below(1000)),
        properties,
    }
}

#[test]
fn message_records_round_trip_and_mutations_never_panic() {
    let mut rng = Rng(0x5EED_0004);
    let n = cases();
    let mut rejected = 0;
    for _ in 0..n {
        let record = random_record(&mut rng);
        let v2 = rng.below(2) == 1;
        let bytes = message::encode_record(&record, v2);
        let back = message::decode_all(&bytes).expect("valid record decodes");
        assert_eq!(back.len(), 1);
        assert_eq!(
            (back[0].queue_offset, &back[0].topic, back[0].store_host),
            (record.queue_offset, &record.topic, record.store_host)
        );
        assert_eq!(back[0].properties, record.properties);
        if message::decode_all(&mutate(&mut rng, &bytes)).is_err() {
            rejected += 1;
        }
    }
    eprintln!(
        "message records: {n} round trips, {n} mutations ({rejected} rejected, none panicked)"
    );
}

#[test]
fn trace_and_text_parsers_never_panic_on_mutations() {
    let mut rng = Rng(0x5EED_0005);
    let trace_sample = "Pub\u{1}1\u{1}R\u{1}G\u{1}T\u{1}M\u{1}null\u{1}k1 k2\u{1}h:1\u{1}7\u{1}2\u{1}0\u{1}O\u{1}true\u{2}SubAfter\u{1}r\u{1}M\u{1}1\u{1}true\u{1}k1\u{1}0\u{1}9\u{1}G\u{2}";
    let text_samples = [
        "1.2 KiB",
        "0 B",
        "299,3 GiB",
        "0.0 0.0 0.0",
        "0 382.66 38.55",
        "Total : 1 GiB, Free : 2 MiB.",
        "brokerRole=SLAVE\nflushDiskType:SYNC_FLUSH\n",
    ];
    let n = cases();
    for _ in 0..n {
        let _ = trace::decode(&mutate(&mut rng, trace_sample.as_bytes()));
        let sample = rng.pick(&text_samples).as_bytes();
        let mutated = mutate(&mut rng, sample);
        let _ = text::parse_broker_config(&mutated);
        if let Ok(s) = std::str::from_utf8(&mutated) {
            let _ = text::parse_human_bytes(s);
            let _ = text::parse_tps(s);
            let _ = text::parse_dir_capacity(s);
        }
    }
    assert_eq!(
        trace::decode(trace_sample.as_bytes())
            .expect("sample")
            .len(),
        2
    );
    eprintln!("trace and text parsers: {n} mutated cases each");
}

#[test]
fn configuration_files_never_panic_and_name_their_error() {
    let mut rng = Rng(0x5EED_0006);
    let samples = [
        include_str!("../../config/example.toml"),
        include_str!("../../config/minimal.toml"),
        include_str!("../../config/quickstart.toml"),
        "[[cluster]]\nname = \"a\"\nnamesrv = [\"h:1\"]\n[[flow]]\nname = \"f\"\ncluster = \"a\"\ntopic = \"t\"\ngroup = \"g\"\nschedule = \"0 * * * * *\"\nsubscription = { sql = \"a > 1 AND b IN ('x', 'y')\" }\nproduced = { kind = \"sql\", url_env = \"U\", query = \"q\", time_zone = \"UTC\" }\nconsumed = { kind = \"http\", url = \"http://x\" }\n",
    ];
    // Config parsing is slower than byte decoding: a tenth of the cases.
    let n = (cases() / 10).max(100);
    let (mut accepted, mut rejected) = (0, 0);
    for _ in 0..n {
        let sample = rng.pick(&samples).as_bytes();
        let mutated = mutate(&mut rng, sample);
        let Ok(text) = std::str::from_utf8(&mutated) else {
            continue;
        };
        match mqaudit::config::Config::from_toml_str(text, |_| Some("postgres://x".into())) {
            Ok(_) => accepted += 1,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                rejected += 1;
            }
        }
    }
    assert!(
        rejected > 0 && accepted > 0,
        "{accepted} accepted, {rejected} rejected"
    );
    eprintln!(
        "configuration files: {n} mutated cases ({accepted} accepted, {rejected} rejected, none panicked)"
    );
}

#[test]
fn api_query_strings_never_panic_and_decode_what_they_carry() {
    let mut rng = Rng(0x5EED_0007);
    let samples = [
        "flow=orders&stage=consume&since=2026-12-01T00:00:00Z",
        "flow=a%20b&x",
        "k=%FF%zz%4&=&&",
    ];
    let n = cases();
    for _ in 0..n {
        let mutated = if rng.below(2) == 0 {
            let sample = *rng.pick(&samples);
            mutate(&mut rng, sample.as_bytes())
        } else {
            rng.bytes_below(64)
        };
        let text = String::from_utf8_lossy(&mutated);
        let _ = mqaudit::http::api::parse_query(&text);
    }
    // What a round trip through form encoding carries comes back.
    for _ in 0..n / 10 {
        let value: String = (0..rng.below(12))
            .map(|_| char::from(32 + rng.below(95) as u8))
            .collect();
        let encoded: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("flow", &value)
            .finish();
        assert_eq!(mqaudit::http::api::parse_query(&encoded)["flow"], value);
    }
    eprintln!(
        "API query strings: {n} mutated or random cases, {} round trips",
        n / 10
    );
}
