//! The remoting client against the protocol fake: correlation of many
//! requests answered out of order, timeouts, a peer that dies mid-frame,
//! garbage frames, and reconnecting afterwards.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mqaudit::admin::{Admin, HaStatus};
use mqaudit::remoting::{Client, ClientOptions, Command, Pool};
use tokio::time::Instant;

use crate::support::fake::{Action, FakePeer, fail, ok};

fn request(code: i32, tag: &str) -> Command {
    Command::request(code, BTreeMap::from([("tag".to_string(), tag.to_string())]))
}

fn options(timeout_ms: u64) -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_millis(timeout_ms),
        acl: None,
    }
}

#[tokio::test]
async fn many_requests_in_flight_are_matched_by_opaque_when_answered_out_of_order() {
    // Each response is delayed by a different amount so they return reversed.
    let fake = FakePeer::start(|req| {
        let tag: u64 = req.ext("tag").and_then(|t| t.parse().ok()).unwrap_or(0);
        let delay = Duration::from_millis(200 - tag * 3);
        Action::ReplyAfter(delay, ok(format!("echo-{tag}")))
    })
    .await;
    let client = Arc::new(Client::new(&fake.addr, options(5_000)));
    let mut tasks = Vec::new();
    for i in 0..64u64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let response = client
                .invoke(request(28, &i.to_string()))
                .await
                .expect("answered");
            (i, response.body)
        }));
    }
    for task in tasks {
        let (i, body) = task.await.expect("task");
        assert_eq!(body, format!("echo-{i}").as_bytes());
    }
    assert_eq!(
        fake.connections(),
        1,
        "all 64 requests share one connection"
    );
}

#[tokio::test]
async fn a_peer_that_never_answers_gives_a_timeout_within_the_configured_time() {
    let fake = FakePeer::start(|_| Action::Silence).await;
    let client = Client::new(&fake.addr, options(300));
    let started = Instant::now();
    let error = client
        .invoke(request(28, "x"))
        .await
        .expect_err("must time out");
    let elapsed = started.elapsed();
    assert_eq!(error.kind(), "timeout", "{error}");
    assert!(error.to_string().contains("request code 28"), "{error}");
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1_300), "took {elapsed:?}");
}

#[tokio::test]
async fn connecting_to_a_closed_port_is_an_io_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    drop(listener);
    let error = Client::new(&addr, options(1_000))
        .invoke(request(28, "x"))
        .await
        .expect_err("refused");
    assert_eq!(error.kind(), "io", "{error}");
    assert!(error.to_string().contains("connect failed"), "{error}");
}

#[tokio::test]
async fn a_peer_killed_mid_response_gives_io_and_the_next_request_reconnects() {
    let fake = FakePeer::start(|req| match req.ext("tag") {
        Some("die") => Action::CloseMidFrame(ok(vec![7u8; 1000]), 200),
        _ => Action::Reply(ok("fine")),
    })
    .await;
    let client = Client::new(&fake.addr, options(2_000));
    let error = client.invoke(request(28, "die")).await.expect_err("cut");
    assert_eq!(error.kind(), "io", "{error}");
    assert!(error.to_string().contains("middle of a frame"), "{error}");
    let response = client
        .invoke(request(28, "again"))
        .await
        .expect("reconnected");
    assert_eq!(&response.body[..], b"fine");
    assert_eq!(fake.connections(), 2);
}

#[tokio::test]
async fn every_waiting_request_fails_at_once_when_the_connection_dies() {
    let fake = FakePeer::start(|req| match req.ext("tag") {
        Some("die") => Action::CloseMidFrame(ok("x"), 3),
        _ => Action::Silence,
    })
    .await;
    let client = Arc::new(Client::new(&fake.addr, options(10_000)));
    let mut waiting = Vec::new();
    for i in 0..10 {
        let client = client.clone();
        waiting.push(tokio::spawn(async move {
            client.invoke(request(28, &i.to_string())).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let _ = client.invoke(request(28, "die")).await;
    for task in waiting {
        let error = task.await.expect("task").expect_err("connection died");
        assert_eq!(error.kind(), "io", "{error}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waiters were not failed promptly"
    );
}

#[tokio::test]
async fn garbage_frames_are_protocol_errors_and_the_client_recovers() {
    let fake = FakePeer::start(|req| match req.ext("tag") {
        Some("oversize") => Action::Raw(vec![0x7F, 0xFF, 0xFF, 0xFF, 0, 0]),
        Some("lying-header") => Action::Raw(vec![0, 0, 0, 8, 0, 0, 0, 99, b'{', b'}', 0, 0]),
        Some("bad-json") => Action::Raw(vec![0, 0, 0, 6, 0, 0, 0, 2, b'{', b'x']),
        Some("bad-type") => Action::Raw(vec![0, 0, 0, 4, 9, 0, 0, 0]),
        _ => Action::Reply(ok("fine")),
    })
    .await;
    let client = Client::new(&fake.addr, options(2_000));
    for (tag, expected) in [
        ("oversize", "exceeds"),
        ("lying-header", "overruns"),
        ("bad-json", "JSON header"),
        ("bad-type", "serialize type 9"),
    ] {
        let error = client.invoke(request(28, tag)).await.expect_err(tag);
        assert_eq!(error.kind(), "protocol", "{tag}: {error}");
        assert!(error.to_string().contains(expected), "{tag}: {error}");
        let response = client.invoke(request(28, "ok")).await.expect("recovers");
        assert_eq!(&response.body[..], b"fine");
    }
}

#[tokio::test]
async fn server_initiated_requests_are_refused_without_disturbing_responses() {
    // The fake answers every request, and first pushes a request of its own
    // (as a broker does with NOTIFY_CONSUMER_IDS_CHANGED).
    let fake = FakePeer::start(|req| {
        if req.is_response() {
            return Action::Silence;
        }
        let push = Command::request(40, BTreeMap::new())
            .to_bytes()
            .expect("push");
        let mut answer = ok("after-push");
        answer.opaque = req.opaque;
        answer.flag = 1;
        let mut raw = push.to_vec();
        raw.extend_from_slice(&answer.to_bytes().expect("answer"));
        Action::Raw(raw)
    })
    .await;
    let client = Client::new(&fake.addr, options(2_000));
    let response = client.invoke(request(28, "x")).await.expect("answered");
    assert_eq!(&response.body[..], b"after-push");
}

#[tokio::test]
async fn ha_status_not_available_is_a_value_and_other_failures_are_remote_errors() {
    let fake = FakePeer::start(|req| match req.code {
        907 => Action::Reply(fail(1, "HA service is not available")),
        28 => Action::Reply(fail(2, "[REJECTREQUEST]system busy")),
        _ => Action::Reply(fail(3, " request type 0 not supported")),
    })
    .await;
    let admin = Admin::new(Arc::new(Pool::new(options(2_000))), Duration::from_secs(2));
    match admin.ha_status(&fake.addr).await.expect("not an error") {
        HaStatus::NotAvailable { code, reason } => {
            assert_eq!(code, 1);
            assert!(reason.contains("not available"));
        }
        other => panic!("expected NotAvailable, got {other:?}"),
    }
    let error = admin.runtime_info(&fake.addr).await.expect_err("busy");
    assert_eq!((error.kind(), error.remote_code()), ("remote", Some(2)));
    assert!(error.to_string().contains("system busy"), "{error}");
}

#[tokio::test]
async fn a_malformed_body_is_a_protocol_error_naming_the_body() {
    let fake = FakePeer::start(|req| match req.code {
        106 => Action::Reply(ok("{\"brokerAddrTable\":{\"b\":{\"brokerAddrs\":{0:")),
        208 => Action::Reply(ok("{\"offsetTable\":{{\"topic\":1}:{}}}")),
        26 => Action::Reply(ok(vec![0xFF, 0xFE, 0x3D])),
        _ => Action::Reply(ok("")),
    })
    .await;
    let admin = Admin::new(Arc::new(Pool::new(options(2_000))), Duration::from_secs(2));
    let error = admin.cluster_info(&fake.addr).await.expect_err("truncated");
    assert_eq!(error.kind(), "protocol");
    assert!(error.to_string().contains("ClusterInfo"), "{error}");
    let error = admin
        .consume_stats(&fake.addr, "g", None)
        .await
        .expect_err("bad key");
    assert!(error.to_string().contains("MessageQueue"), "{error}");
    let error = admin
        .broker_config(&fake.addr)
        .await
        .expect_err("not utf-8");
    assert!(error.to_string().contains("UTF-8"), "{error}");
}

#[tokio::test]
async fn acl_signed_requests_carry_access_key_and_a_verifiable_signature() {
    use std::sync::Mutex;
    let seen: Arc<Mutex<Vec<Command>>> = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let fake = FakePeer::start(move |req| {
        record.lock().expect("lock").push(req.clone());
        Action::Reply(ok(""))
    })
    .await;
    let acl = mqaudit::remoting::AclCredentials {
        access_key: "ak".to_string(),
        secret_key: "sk".to_string(),
        security_token: None,
    };
    let client = Client::new(
        &fake.addr,
        ClientOptions {
            request_timeout: Duration::from_secs(2),
            acl: Some(acl.clone()),
        },
    );
    client
        .invoke(request(28, "signed"))
        .await
        .expect("answered");
    let received = seen.lock().expect("lock")[0].clone();
    assert_eq!(received.ext("AccessKey"), Some("ak"));
    // The broker's check: re-sign what arrived and compare.
    let mut check = received.clone();
    acl.sign(&mut check);
    assert_eq!(check.ext("Signature"), received.ext("Signature"));
    assert!(received.ext("Signature").is_some_and(|s| !s.is_empty()));
    // Without credentials nothing is added.
    let plain = Client::new(&fake.addr, options(2_000));
    plain.invoke(request(28, "plain")).await.expect("answered");
    assert!(seen.lock().expect("lock")[1].ext("AccessKey").is_none());
}
