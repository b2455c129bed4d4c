//! Every file in `tests/fixtures/rocketmq/` (real Java captures and
//! source-derived trace bodies, see its `sources.md`) decodes, with
//! assertions on concrete values taken from each capture.

use std::collections::BTreeMap;
use std::path::PathBuf;

use mqaudit::admin::{ClusterInfo, OffsetWrapper, RuntimeInfo, TopicConfig, TopicRoute};
use mqaudit::body::json::{self, MessageQueue};
use mqaudit::body::message::parse_properties;
use mqaudit::body::text::{parse_broker_config, parse_dir_capacity, parse_human_bytes, parse_tps};
use mqaudit::body::trace::{self, TraceRecord};
use mqaudit::remoting::{Command, Decoded, SerializeType, decode};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rocketmq")
}

fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn text(name: &str) -> String {
    String::from_utf8(bytes(name)).expect("fixture is UTF-8")
}

/// Decode a `*.frame.hex` capture; it must be exactly one complete frame.
fn frame(name: &str) -> Command {
    let hex = text(name);
    let raw: Vec<u8> = (0..hex.trim().len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex.trim()[i..i + 2], 16).expect("hex"))
        .collect();
    match decode(&raw).unwrap_or_else(|e| panic!("{name}: {e}")) {
        Decoded::Frame(command, used) => {
            assert_eq!(used, raw.len(), "{name}: trailing bytes after the frame");
            command
        }
        Decoded::Incomplete => panic!("{name}: incomplete frame"),
    }
}

fn cluster(body: &[u8]) -> ClusterInfo {
    json::parse_as(body, "ClusterInfo").expect("ClusterInfo parses")
}

fn route(body: &[u8]) -> TopicRoute {
    json::parse_as(body, "TopicRouteData").expect("TopicRouteData parses")
}

/// The files each test below covers. A new fixture without a test fails here.
const COVERED: &[&str] = &[
    "blog_v4.7.0_mqadmin_brokerStatus_flattened.txt",
    "blog_v4.7.0_mqadmin_clusterList_flattened.txt",
    "blog_v4.7.0_mqadmin_consumerProgress_flattened.txt",
    "blog_v4.7.0_mqadmin_getBrokerConfig_partial_flattened.txt",
    "blog_v4.7.0_mqadmin_topicRoute_flattened.txt",
    "blog_v4.7.0_mqadmin_topicStatus_flattened.txt",
    "capture_v4.9.2_GET_BROKER_CLUSTER_INFO_body.json",
    "capture_v4.9.2_GET_BROKER_RUNTIME_INFO_kvtable_pretty.json",
    "capture_v4.9.2_cluster_info_frame_and_runtime_kvtable.md",
    "clientgo_RESET_CONSUMER_CLIENT_OFFSET_body_gson_array_variant.json",
    "clientgo_issue759_RESET_CONSUMER_CLIENT_OFFSET_body_fastjson_mq_keys.json",
    "colisys_v5.3.2_GET_BROKER_CLUSTER_INFO_response.frame.hex",
    "colisys_v5.3.2_GET_BROKER_CLUSTER_INFO_response_body.json",
    "gocomment_GET_BROKER_CLUSTER_INFO_body_ids_0_2_3.json",
    "gocomment_GET_BROKER_CLUSTER_INFO_body_single.json",
    "gocomment_GET_CONSUME_STATS_body_v4x.json",
    "luaresty_REGISTER_BROKER_request_body_v4x.json",
    "newlife_GET_CONSUME_STATS_body_comment_apache_and_aliyun_reformatted.txt",
    "newlife_v5.2.0_GET_ROUTEINFO_BY_TOPIC_request_dotnet_v373.frame.hex",
    "newlife_v5.2.0_GET_ROUTEINFO_BY_TOPIC_request_java_v453.frame.hex",
    "newlife_v5.2.0_GET_ROUTEINFO_BY_TOPIC_response_to_v373_fastjson_numeric_keys.frame.hex",
    "newlife_v5.2.0_GET_ROUTEINFO_BY_TOPIC_response_to_v453_standard_json.frame.hex",
    "newlife_v5.2.0_HEART_BEAT_request_java_v453.frame.hex",
    "newlife_v5.2.0_HEART_BEAT_response_json.frame.hex",
    "newlife_v5.2.0_SEND_MESSAGE_V2_request_java_v453.frame.hex",
    "newlife_v5.2.0_SEND_MESSAGE_V2_response_json.frame.hex",
    "pcap_broker_HEART_BEAT_request_dotnet_consumer_json.frame.hex",
    "pcap_broker_HEART_BEAT_response_rocketmq_binary.frame.hex",
    "pcap_broker_SEND_MESSAGE_V2_response_rocketmq_binary.frame.hex",
    "pcap_namesrv_GET_ROUTEINFO_BY_TOPIC_request_dotnet_json.frame.hex",
    "pcap_namesrv_GET_ROUTEINFO_BY_TOPIC_response_v373_body.json",
    "pcap_namesrv_GET_ROUTEINFO_BY_TOPIC_response_v373_header.json",
    "pcap_namesrv_GET_ROUTEINFO_BY_TOPIC_response_v373_json.frame.hex",
    "pyrocketmq_GET_BROKER_CLUSTER_INFO_body_3replicas.json",
    "sourcederived_clientgo_trace_Pub_with_clientHost.bin",
    "sourcederived_clientgo_trace_SubAfter.bin",
    "sourcederived_clientgo_trace_SubBefore_with_clientHost.bin",
    "sourcederived_dashboard_trace_body_Pub_SubBefore_SubAfter_EndTransaction.bin",
    "sources.md",
];

#[test]
fn every_fixture_file_is_covered_and_attributed() {
    let mut on_disk: Vec<String> = std::fs::read_dir(dir())
        .expect("fixture dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut covered: Vec<String> = COVERED.iter().map(|s| s.to_string()).collect();
    covered.sort();
    assert_eq!(on_disk, covered);
    let sources = text("sources.md");
    for name in COVERED.iter().filter(|n| **n != "sources.md") {
        assert!(
            sources.contains(name),
            "sources.md does not attribute {name}"
        );
    }
}

// === name-server cluster info =========================================

#[test]
fn cluster_info_v5_3_2_frame_with_bare_numeric_keys() {
    let command = frame("colisys_v5.3.2_GET_BROKER_CLUSTER_INFO_response.frame.hex");
    assert_eq!(
        (command.code, command.version, command.opaque),
        (0, 477, 145527)
    );
    assert!(command.is_response());
    assert_eq!(command.serialize_type, SerializeType::Json);
    assert_eq!(
        command.body,
        bytes("colisys_v5.3.2_GET_BROKER_CLUSTER_INFO_response_body.json")
    );
    let info = cluster(&command.body);
    let broker = &info.broker_addr_table["Helix-MBP.local"];
    assert_eq!(broker.master_addr(), Some("192.168.1.16:10911"));
    assert_eq!(broker.cluster, "DefaultCluster");
    assert_eq!(
        info.cluster_addr_table["DefaultCluster"],
        ["Helix-MBP.local"]
    );
}

#[test]
fn cluster_info_v4_9_2_two_masters() {
    let info = cluster(&bytes("capture_v4.9.2_GET_BROKER_CLUSTER_INFO_body.json"));
    assert_eq!(
        info.broker_addr_table["broker-a"].master_addr(),
        Some("10.20.141.73:20911")
    );
    assert_eq!(
        info.broker_addr_table["broker-b"].master_addr(),
        Some("10.20.141.72:20911")
    );
    assert_eq!(
        info.cluster_addr_table["rocketmq-cpaas"],
        ["broker-b", "broker-a"]
    );
}

#[test]
fn cluster_info_with_non_contiguous_slave_ids() {
    let info = cluster(&bytes(
        "gocomment_GET_BROKER_CLUSTER_INFO_body_ids_0_2_3.json",
    ));
    let group = &info.broker_addr_table["rocketmq-fce78b93-1"];
    assert_eq!(group.master_addr(), Some("10.10.88.243:27622"));
    let slaves: Vec<(u64, &str)> = group.slaves().collect();
    assert_eq!(
        slaves,
        [(2, "10.10.88.243:27328"), (3, "10.10.88.243:27664")]
    );
    let single = cluster(&bytes("gocomment_GET_BROKER_CLUSTER_INFO_body_single.json"));
    assert_eq!(
        single.broker_addr_table["broker-a"].master_addr(),
        Some("192.168.1.111:10911")
    );
    assert_eq!(single.broker_addr_table["broker-a"].slaves().count(), 0);
}

#[test]
fn cluster_info_with_two_slaves_per_master() {
    let info = cluster(&bytes(
        "pyrocketmq_GET_BROKER_CLUSTER_INFO_body_3replicas.json",
    ));
    assert_eq!(info.broker_addr_table.len(), 2);
    let group = &info.broker_addr_table["sts-broker-d1-3"];
    assert_eq!(group.master_addr(), Some("10.88.113.253:20911"));
    assert_eq!(
        group.slaves().collect::<Vec<_>>(),
        [(1, "10.88.4.240:20911"), (2, "10.88.76.69:20911")]
    );
    assert_eq!(info.cluster_addr_table["d1"].len(), 2);
}

#[test]
fn markdown_capture_holds_a_v4_9_2_frame_and_a_runtime_table() {
    let md = text("capture_v4.9.2_cluster_info_frame_and_runtime_kvtable.md");
    // The frame is printed as a Python bytes literal after the length field:
    // b"\0\0\0_{...header...}{...body...}"; rebuild the bytes and decode.
    let literal = md
        .lines()
        .find_map(|l| l.strip_prefix("Get data from server:b\""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("frame line");
    let mut raw = Vec::new();
    let mut chars = literal.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('0') => raw.push(0),
                Some(other) => raw.push(other as u8),
                None => panic!("dangling escape"),
            },
            (c, false) => raw.extend_from_slice(c.to_string().as_bytes()),
        }
    }
    let mut framed = (raw.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&raw);
    let Ok(Decoded::Frame(command, _)) = decode(&framed) else {
        panic!("markdown frame does not decode");
    };
    assert_eq!((command.version, command.opaque), (397, 1));
    // "content length:388 ... header length:95": body = 388 - 4 - 95.
    assert_eq!(command.body.len(), 388 - 4 - 95);
    assert_eq!(
        command.body,
        bytes("capture_v4.9.2_GET_BROKER_CLUSTER_INFO_body.json")
    );
    let json_block = md
        .split("```json")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("json block");
    let table: RuntimeInfo = json::parse_as(json_block.as_bytes(), "KVTable").expect("KVTable");
    assert_eq!(table.int("commitLogMaxOffset"), Ok(Some(169_891_684_804)));
}

// === broker runtime info ==============================================

#[test]
fn runtime_kvtable_v4_9_2_values_with_units() {
    let table: RuntimeInfo = json::parse_as(
        &bytes("capture_v4.9.2_GET_BROKER_RUNTIME_INFO_kvtable_pretty.json"),
        "KVTable",
    )
    .expect("KVTable parses");
    assert_eq!(table.int("commitLogMaxOffset"), Ok(Some(169_891_684_804)));
    assert_eq!(table.int("commitLogMinOffset"), Ok(Some(169_651_208_192)));
    assert_eq!(table.int("bootTimestamp"), Ok(Some(1_704_677_028_015)));
    assert_eq!(
        table.int("remainTransientStoreBufferNumbs"),
        Ok(Some(2_147_483_647))
    );
    assert_eq!(table.flush_lag_bytes(), Ok(Some(0)));
    assert_eq!(table.decimal("commitLogDiskRatio"), Ok(Some(0.08)));
    assert_eq!(table.version(), Some("V4_9_2"));
    let tps = table.tps("getTotalTps").expect("tps").expect("present");
    assert_eq!(tps.last_10s, Some(98.79012098790122));
    assert_eq!(tps.last_600s, Some(121.89155048345326));
    let (total, free) =
        parse_dir_capacity(table.get("commitLogDirCapacity").expect("capacity")).expect("parses");
    assert_eq!(total, parse_human_bytes("299.3 GiB").expect("n"));
    assert_eq!(free, parse_human_bytes("276.1 GiB").expect("n"));
    assert!(
        table
            .get("putMessageDistributeTime")
            .expect("present")
            .ends_with(' ')
    );
    assert_eq!(
        table.get("commitLogDiskRatio_/home/soft/rocketmq-4.9.2_0905/store/commitlog"),
        Some("0.08")
    );
}

#[test]
fn broker_status_v4_7_0_values_parse_with_our_readers() {
    let flat = text("blog_v4.7.0_mqadmin_brokerStatus_flattened.txt");
    // mqadmin prints "key : value"; the published copy collapsed newlines.
    let after = |key: &str| -> String {
        let start = flat
            .find(&format!("{key} :"))
            .unwrap_or_else(|| panic!("{key}"))
            + key.len()
            + 2;
        flat[start..].trim_start().to_string()
    };
    assert!(after("brokerVersionDesc").starts_with("V4_7_0"));
    assert!(after("commitLogMaxOffset").starts_with("3473383494"));
    let capacity = after("commitLogDirCapacity");
    let capacity = &capacity[..capacity.find("GiB.").expect("capacity end") + 4];
    let (total, free) = parse_dir_capacity(capacity).expect("capacity parses");
    assert_eq!(
        (total, free),
        (
            parse_human_bytes("98.3 GiB").expect("n"),
            parse_human_bytes("93.5 GiB").expect("n")
        )
    );
    let miss = after("getMissTps");
    let triple: Vec<&str> = miss.split(' ').take(3).collect();
    let tps = parse_tps(&triple.join(" ")).expect("tps");
    assert_eq!(tps.last_10s, Some(786.5213478652134));
}

// === routes ===========================================================

#[test]
fn route_bodies_agree_across_the_version_gate() {
    let fastjson = frame(
        "newlife_v5.2.0_GET_ROUTEINFO_BY_TOPIC_response_to_v373_fastjson_numeric_keys.frame.hex",
    );
    let standard =
        frame("newlife_v5.2.0_GET_ROUTEINFO_BY_TOPIC_response_to_v453_standard_json.frame.hex");
    assert!(fastjson.body.windows(4).any(|w| w == b"{0:\""));
    assert!(standard.body.windows(5).any(|w| w == b"{\"0\":"));
    let (a, b) = (route(&fastjson.body), route(&standard.body));
    assert_eq!(a, b);
    assert_eq!(a.broker_datas[0].master_addr(), Some("10.2.3.117:10911"));
    assert_eq!(
        (a.queue_datas[0].read_queue_nums, a.queue_datas[0].perm),
        (8, 6)
    );
    assert_eq!((fastjson.opaque, standard.opaque), (1, 0));
}

#[test]
fn route_v373_pcap_with_old_topic_syn_flag() {
    let command = frame("pcap_namesrv_GET_ROUTEINFO_BY_TOPIC_response_v373_json.frame.hex");
    assert_eq!(
        (command.version, command.opaque, command.language.as_str()),
        (373, 32, "JAVA")
    );
    assert_eq!(
        command.body,
        bytes("pcap_namesrv_GET_ROUTEINFO_BY_TOPIC_response_v373_body.json")
    );
    let route = route(&command.body);
    assert_eq!(route.broker_datas.len(), 4);
    assert!(
        route
            .queue_datas
            .iter()
            .all(|q| q.read_queue_nums == 10 && q.write_queue_nums == 10)
    );
    let a = route
        .broker_datas
        .iter()
        .find(|b| b.broker_name == "broker-a")
        .expect("broker-a");
    assert_eq!(a.master_addr(), Some("10.9.15.40:10911"));
    // The header file is the frame's header, byte for byte.
    let header = bytes("pcap_namesrv_GET_ROUTEINFO_BY_TOPIC_response_v373_header.json");
    let mut framed = ((4 + header.len()) as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&(header.len() as u32).to_be_bytes());
    framed.extend_from_slice(&header);
    let Ok(Decoded::Frame(alone, _)) = decode(&framed) else {
        panic!("header alone")
    };
    assert_eq!(
        (alone.code, alone.opaque, alone.version, alone.flag),
        (0, 32, 373, 1)
    );
}

#[test]
fn mqadmin_topic_route_v4_7_0_pretty_fastjson() {
    let flat = text("blog_v4.7.0_mqadmin_topicRoute_flattened.txt");
    let json_start = flat.find('{').expect("json");
    let route = route(flat[json_start..].trim().as_bytes());
    assert_eq!(route.broker_datas[0].master_addr(), Some("x.x.x.x:10911"));
    assert_eq!(route.queue_datas[0].broker_name, "fat_mq_c");
    assert_eq!(
        (
            route.queue_datas[0].read_queue_nums,
            route.queue_datas[0].topic_sys_flag
        ),
        (8, 0)
    );
}

#[test]
fn route_requests_from_java_and_dotnet_decode_and_ours_match_java_bytes() {
    let java = frame("newlife_v5.2.0_GET_ROUTEINFO_BY_TOPIC_request_java_v453.frame.hex");
    assert_eq!(
        (java.code, java.version, java.opaque, java.is_response()),
        (105, 453, 0, false)
    );
    assert_eq!(java.ext("topic"), Some("TeZ_Test_Lng"));
    // Our encoder writes the same fastjson field order: byte-identical frame.
    let mut ours = Command::request(
        105,
        BTreeMap::from([("topic".to_string(), "TeZ_Test_Lng".to_string())]),
    );
    ours.version = 453;
    let hex = text("newlife_v5.2.0_GET_ROUTEINFO_BY_TOPIC_request_java_v453.frame.hex");
    let ours_hex: String = ours
        .to_bytes()
        .expect("encodes")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(ours_hex, hex.trim());
    let dotnet = frame("newlife_v5.2.0_GET_ROUTEINFO_BY_TOPIC_request_dotnet_v373.frame.hex");
    assert_eq!(
        (dotnet.language.as_str(), dotnet.version, dotnet.opaque),
        ("DOTNET", 373, 1)
    );
    // That client's own typo, preserved by the capture.
    assert_eq!(dotnet.remark.as_deref(), Some("GET_ROUTEINTO_BY_TOPIC"));
    let pcap = frame("pcap_namesrv_GET_ROUTEINFO_BY_TOPIC_request_dotnet_json.frame.hex");
    assert_eq!(
        (pcap.opaque, pcap.ext("topic")),
        (32, Some("IOC_INS_PARSE_TOPIC"))
    );
}

// === heartbeats and sends =============================================

#[test]
fn heartbeat_frames_json_and_binary() {
    let request = frame("newlife_v5.2.0_HEART_BEAT_request_java_v453.frame.hex");
    assert_eq!((request.code, request.opaque), (34, 3));
    let body = json::parse(&request.body).expect("heartbeat body");
    assert_eq!(body["clientID"], "10.1.5.9@40700#955220087822500");
    assert_eq!(body["producerDataSet"][1]["groupName"], "R01_producer_123");
    let response = frame("newlife_v5.2.0_HEART_BEAT_response_json.frame.hex");
    assert_eq!(response.ext("IS_SUPPORT_HEART_BEAT_V2"), Some("true"));
    assert_eq!(response.ext("IS_SUB_CHANGE"), Some("true"));
    let binary = frame("pcap_broker_HEART_BEAT_response_rocketmq_binary.frame.hex");
    assert_eq!(binary.serialize_type, SerializeType::RocketMq);
    assert_eq!(
        (binary.code, binary.version, binary.opaque, binary.flag),
        (0, 373, 1575, 1)
    );
    assert_eq!(
        (binary.remark.as_deref(), binary.ext_fields.len()),
        (None, 0)
    );
    let dotnet = frame("pcap_broker_HEART_BEAT_request_dotnet_consumer_json.frame.hex");
    assert_eq!(
        (dotnet.language.as_str(), dotnet.opaque),
        ("DOTNET", 429287)
    );
    let body = json::parse(&dotnet.body).expect("dotnet heartbeat body");
    assert_eq!(body["ConsumerDataSet"][0]["GroupName"], "DriverRecognition");
    assert_eq!(
        body["ConsumerDataSet"][0]["SubscriptionDataSet"][0]["SubVersion"],
        638278631107467070i64
    );
}

#[test]
fn send_message_v2_frames_json_and_binary() {
    let request = frame("newlife_v5.2.0_SEND_MESSAGE_V2_request_java_v453.frame.hex");
    assert_eq!(
        (request.code, request.ext("b"), request.ext("n")),
        (310, Some("TeZ_Test_Lng"), Some("broker-a"))
    );
    let properties = parse_properties(request.ext("i").expect("properties"));
    assert_eq!(
        properties["UNIQ_KEY"],
        "2400DD02100800152B2B7D0419D6DD5E9EFC18B4AAC246212A7D0000"
    );
    assert_eq!(
        (properties["WAIT"].as_str(), properties["TAGS"].as_str()),
        ("true", "*")
    );
    assert_eq!(request.body.len(), 1033 - 4 - 385);
    let response = frame("newlife_v5.2.0_SEND_MESSAGE_V2_response_json.frame.hex");
    assert_eq!(
        response.ext("msgId"),
        Some("0A02037500002A9F0000000001EC18FC")
    );
    assert_eq!(
        (response.ext("queueId"), response.ext("queueOffset")),
        (Some("0"), Some("0"))
    );
    let binary = frame("pcap_broker_SEND_MESSAGE_V2_response_rocketmq_binary.frame.hex");
    assert_eq!(binary.serialize_type, SerializeType::RocketMq);
    assert_eq!(binary.opaque, 1576);
    assert_eq!(
        binary.ext("msgId"),
        Some("0A090F2800002A9F0000229E897CF382")
    );
    assert_eq!(
        (binary.ext("queueId"), binary.ext("queueOffset")),
        (Some("6"), Some("6379881"))
    );
    assert_eq!(
        (binary.ext("TRACE_ON"), binary.ext("MSG_REGION")),
        (Some("true"), Some("DefaultRegion"))
    );
}

// === consume stats and offset tables ==================================

#[test]
fn consume_stats_v4_with_message_queue_object_keys() {
    let body = json::parse(&bytes("gocomment_GET_CONSUME_STATS_body_v4x.json")).expect("parses");
    assert_eq!(body["consumeTps"], 0.0);
    let table: Vec<(MessageQueue, OffsetWrapper)> =
        json::message_queue_map(&body["offsetTable"], "ConsumeStats").expect("table");
    assert_eq!(table.len(), 8);
    let mut ids: Vec<i32> = table.iter().map(|(q, _)| q.queue_id).collect();
    ids.sort();
    assert_eq!(ids, (0..8).collect::<Vec<_>>());
    assert!(table.iter().all(|(q, o)| q.topic == "topic_test"
        && q.broker_name == "broker-a"
        && o.pull_offset.is_none()
        && o.lag() == 0));
}

#[test]
fn consume_stats_apache_negative_lag_and_aliyun_extras() {
    let source = text("newlife_GET_CONSUME_STATS_body_comment_apache_and_aliyun_reformatted.txt");
    // Two bodies inside C# comments: strip "//" and split at the blank comment line.
    let lines: Vec<&str> = source
        .lines()
        .filter_map(|l| l.trim().strip_prefix("//"))
        .collect();
    let mut bodies: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    let mut depth = 0i32;
    for line in lines {
        if current.is_none() && line.trim() == "{" {
            current = Some(String::new());
        }
        if let Some(body) = current.as_mut() {
            body.push_str(line);
            body.push('\n');
            depth += line.matches('{').count() as i32 - line.matches('}').count() as i32;
            if depth == 0 {
                bodies.extend(current.take());
            }
        }
    }
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    let apache = json::parse(bodies[0].as_bytes()).expect("apache");
    let table: Vec<(MessageQueue, OffsetWrapper)> =
        json::message_queue_map(&apache["offsetTable"], "apache").expect("table");
    let (queue, offsets) = &table[0];
    assert_eq!(
        (queue.broker_name.as_str(), queue.topic.as_str()),
        ("wh-sr-11-26", "mip_topic_0")
    );
    assert_eq!((offsets.broker_offset, offsets.consumer_offset), (5, 35));
    assert_eq!(offsets.lag(), 0, "negative raw lag is clamped");
    let aliyun = json::parse(bodies[1].as_bytes()).expect("aliyun");
    let table: Vec<(MessageQueue, OffsetWrapper)> =
        json::message_queue_map(&aliyun["offsetTable"], "aliyun").expect("table");
    assert_eq!(table[0].0.queue_id, 5);
    assert_eq!(
        (table[0].1.pull_offset, table[0].1.last_timestamp),
        (Some(4), 1_647_746_454_641)
    );
}

#[test]
fn reset_offset_bodies_fastjson_keys_and_gson_pairs() {
    let fastjson = json::parse(&bytes(
        "clientgo_issue759_RESET_CONSUMER_CLIENT_OFFSET_body_fastjson_mq_keys.json",
    ))
    .expect("parses");
    let table: Vec<(MessageQueue, i64)> =
        json::message_queue_map(&fastjson["offsetTable"], "ResetOffsetBody").expect("table");
    assert_eq!(table.len(), 4);
    assert!(
        table
            .iter()
            .all(|(q, o)| q.broker_name == "RaftNode00" && q.topic == "topicB" && *o == 0)
    );
    let gson = json::parse(&bytes(
        "clientgo_RESET_CONSUMER_CLIENT_OFFSET_body_gson_array_variant.json",
    ))
    .expect("parses");
    let table: Vec<(MessageQueue, i64)> =
        json::message_queue_map(&gson["offsetTable"], "ResetOffsetBody").expect("pairs");
    assert_eq!(table.len(), 8);
    let q5 = table
        .iter()
        .find(|(q, _)| q.queue_id == 5)
        .expect("queue 5");
    assert_eq!((q5.0.topic.as_str(), q5.1), ("zx_tst", 23_354_233));
}

#[test]
fn mqadmin_consumer_progress_and_topic_status_numbers() {
    let progress = text("blog_v4.7.0_mqadmin_consumerProgress_flattened.txt");
    let rows: Vec<(i64, i64)> = progress
        .split("pglog_rmq_t_biz_extend disaster_mq_a ")
        .skip(1)
        .map(|row| {
            let cols: Vec<&str> = row.split_whitespace().collect();
            (
                cols[1].parse().expect("broker offset"),
                cols[2].parse().expect("consumer offset"),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (17_227_343, 17_227_343),
            (16_588_873, 16_588_873),
            (12_053_429, 12_053_429)
        ]
    );
    assert!(progress.trim_end().ends_with("Diff Total: 6"));
    let status = text("blog_v4.7.0_mqadmin_topicStatus_flattened.txt");
    let rows: Vec<(i64, i64)> = status
        .split("fat_mq_c ")
        .skip(1)
        .map(|row| {
            let cols: Vec<&str> = row.split_whitespace().collect();
            (cols[1].parse().expect("min"), cols[2].parse().expect("max"))
        })
        .collect();
    assert_eq!(rows, [(6, 10), (4, 8), (20, 22), (14, 20)]);
}

#[test]
fn mqadmin_cluster_list_names_version_and_address() {
    let list = text("blog_v4.7.0_mqadmin_clusterList_flattened.txt");
    let row: Vec<&str> = list
        .split("/#SPACE")
        .nth(1)
        .expect("row")
        .split_whitespace()
        .collect();
    assert_eq!(
        &row[..5],
        ["fat_mq", "fat_mq_c", "0", "x.x.x.x:10911", "V4_7_0"]
    );
}

// === broker config and topic config ===================================

#[test]
fn broker_config_v4_7_0_key_equals_value() {
    let flat = text("blog_v4.7.0_mqadmin_getBrokerConfig_partial_flattened.txt");
    let pairs = flat.split("============").last().expect("pairs");
    // Rebuild the "key = value" lines the published copy joined with spaces.
    let tokens: Vec<&str> = pairs.split_whitespace().filter(|t| *t != "...").collect();
    let lines: String = tokens
        .chunks(3)
        .map(|c| format!("{}\n", c.join(" ")))
        .collect();
    let config = parse_broker_config(lines.as_bytes()).expect("config");
    assert_eq!(config.get("brokerRole"), Some("ASYNC_MASTER"));
    assert_eq!(config.get("maxMsgsNumBatch"), Some("64"));
    assert_eq!(config.get("serverSocketRcvBufSize"), Some("131072"));
    assert_eq!(config.malformed_lines, 0);
}

#[test]
fn topic_config_table_v4_inside_register_broker_body() {
    let body =
        json::parse(&bytes("luaresty_REGISTER_BROKER_request_body_v4x.json")).expect("parses");
    let wrapper = &body["topicConfigSerializeWrapper"];
    assert_eq!(wrapper["dataVersion"]["counter"], 293);
    let table: BTreeMap<String, TopicConfig> =
        serde_json::from_value(wrapper["topicConfigTable"].clone()).expect("topic configs");
    assert_eq!(
        (table["TopicTest"].read_queue_nums, table["TopicTest"].perm),
        (8, 6)
    );
    assert_eq!(
        (
            table["%DLQ%CID_JODIE"].write_queue_nums,
            table["%DLQ%CID_JODIE"].perm
        ),
        (1, 6)
    );
    assert_eq!(table["SCHEDULE_TOPIC_XXXX"].read_queue_nums, 18);
}

// === trace bodies =====================================================

#[test]
fn go_client_trace_records_with_client_host() {
    let records = trace::decode(&bytes(
        "sourcederived_clientgo_trace_Pub_with_clientHost.bin",
    ))
    .expect("pub");
    let TraceRecord::Pub(p) = &records[0] else {
        panic!("not Pub")
    };
    assert_eq!(p.msg_id, "0A5DE93A833B18B4AAC26F842A2F0000");
    assert_eq!(
        (p.keys.as_str(), p.store_host.as_str()),
        ("OrderID1882", "10.93.233.58:10911")
    );
    assert_eq!((p.body_length, p.cost_time_ms, p.success), (11, 3572, true));
    assert_eq!(p.offset_msg_id, "0A5DE93A00002A9F000000000042E322");
    assert_eq!(p.client_host.as_deref(), Some("10.93.233.58"));
    let records =
        trace::decode(&bytes("sourcederived_clientgo_trace_SubAfter.bin")).expect("subafter");
    let TraceRecord::SubAfter(a) = &records[0] else {
        panic!("not SubAfter")
    };
    assert_eq!(a.msg_id, "0A5DE93A973418B4AAC26FFAFA5A0000");
    assert_eq!(
        (a.success, a.timestamp, a.group.as_deref()),
        (true, Some(1_563_789_119_096), Some("CID_JODIE_1"))
    );
    let records = trace::decode(&bytes(
        "sourcederived_clientgo_trace_SubBefore_with_clientHost.bin",
    ))
    .expect("subbefore");
    let TraceRecord::SubBefore(b) = &records[0] else {
        panic!("not SubBefore")
    };
    assert_eq!(
        (b.region_id.as_str(), b.group.as_str(), b.retry_times),
        ("", "CID_JODIE_1", 0)
    );
    assert_eq!(b.request_id, a.request_id);
}

#[test]
fn dashboard_trace_body_with_four_record_types() {
    let records = trace::decode(&bytes(
        "sourcederived_dashboard_trace_body_Pub_SubBefore_SubAfter_EndTransaction.bin",
    ))
    .expect("decodes");
    assert_eq!(records.len(), 4);
    assert!(
        records
            .iter()
            .all(|r| r.msg_id() == "0A9A003F00002A9F0000000000000319")
    );
    assert!(
        records
            .iter()
            .all(|r| r.keys().collect::<Vec<_>>() == ["KeyA"])
    );
    let TraceRecord::SubAfter(a) = &records[2] else {
        panic!("not SubAfter")
    };
    assert_eq!(
        (a.cost_time_ms, a.context_code, a.group.as_deref()),
        (200, Some(0), None)
    );
    let TraceRecord::EndTransaction(e) = &records[3] else {
        panic!("not EndTransaction")
    };
    assert_eq!(
        (
            e.transaction_state.as_str(),
            e.from_transaction_check,
            e.msg_type
        ),
        ("COMMIT_MESSAGE", true, 2)
    );
}
