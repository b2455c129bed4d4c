//! `--web.config.file` end to end: TLS with a real certificate and basic auth
//! with a bcrypt hash, checked with curl as an operator would; a bad file is
//! a usage error (exit 64).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::support::fake::{Action, FakePeer};
use crate::support::unique;

fn curl(args: &[&str]) -> (String, String) {
    let output = Command::new("curl")
        .args(["-s", "-S", "-o", "/dev/null", "-D", "-", "--max-time", "5"])
        .args(args)
        .output()
        .expect("curl is required");
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn status(headers: &str) -> Option<u16> {
    headers.lines().next()?.split(' ').nth(1)?.parse().ok()
}

#[tokio::test]
async fn tls_and_basic_auth_from_an_exporter_toolkit_file() {
    let dir = std::env::temp_dir().join(unique("mqaudit-web"));
    std::fs::create_dir_all(&dir).expect("dir");
    let openssl = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .args(["-keyout", "server.key", "-out", "server.crt"])
        .current_dir(&dir)
        .output()
        .expect("openssl is required");
    assert!(
        openssl.status.success(),
        "{}",
        String::from_utf8_lossy(&openssl.stderr)
    );
    let hash = bcrypt::hash("s3cret", 4).expect("bcrypt");
    // Relative paths resolve against the web config file's directory.
    std::fs::write(
        dir.join("web.yml"),
        format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  alice: {hash}\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n"),
    )
    .expect("write");

    let fake = FakePeer::start(|_| Action::Silence).await;
    let mut config = mqaudit::config::Config::for_namesrv(&fake.addr).expect("config");
    config.web.listen_address = "127.0.0.1:0".to_string();
    config.web.config_file = Some(dir.join("web.yml").to_string_lossy().into_owned());
    config.collect.interval = Duration::from_secs(2);
    config.collect.timeout = Duration::from_secs(1);
    config.collect.budget = Duration::from_secs(2);
    let running = mqaudit::app::start(config).await.expect("start");
    let url = format!("https://127.0.0.1:{}/metrics", running.addr.port());
    let cacert = dir.join("server.crt").to_string_lossy().into_owned();

    let (url2, ca2) = (url.clone(), cacert.clone());
    let results = tokio::task::spawn_blocking(move || {
        (
            curl(&["--cacert", &ca2, "-u", "alice:s3cret", &url2]),
            curl(&["--cacert", &ca2, "-u", "alice:s3cret", &url2]),
            curl(&["--cacert", &ca2, &url2]),
            curl(&["--cacert", &ca2, "-u", "alice:wrong", &url2]),
            curl(&["--cacert", &ca2, "-u", "mallory:s3cret", &url2]),
            curl(&[&url2.replace("https://", "http://")]),
        )
    })
    .await
    .expect("curl");
    let (ok, ok_again, anonymous, wrong, stranger, plain) = results;
    assert_eq!(status(&ok.0), Some(200), "{ok:?}");
    assert_eq!(
        status(&ok_again.0),
        Some(200),
        "cached credentials: {ok_again:?}"
    );
    assert!(
        ok.0.to_ascii_lowercase().contains("x-frame-options: deny"),
        "{}",
        ok.0
    );
    assert!(ok.0.contains("text/plain; version=0.0.4"), "{}", ok.0);
    for (name, (headers, _)) in [
        ("anonymous", &anonymous),
        ("wrong password", &wrong),
        ("unknown user", &stranger),
    ] {
        assert_eq!(status(headers), Some(401), "{name}: {headers}");
        assert!(
            headers
                .to_ascii_lowercase()
                .contains("www-authenticate: basic"),
            "{name}: {headers}"
        );
    }
    assert_eq!(
        status(&plain.0),
        None,
        "plain HTTP to a TLS port must fail: {plain:?}"
    );
    running.stop().await;

    // A bad web config file is a usage error, with the file named.
    std::fs::write(
        dir.join("bad.yml"),
        "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
    )
    .expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_mqaudit"))
        .args([
            "serve",
            "--namesrv",
            &fake.addr,
            "--web.listen-address",
            "127.0.0.1:0",
        ])
        .arg("--web.config.file")
        .arg(dir.join("bad.yml"))
        .output()
        .expect("run mqaudit");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.yml") && stderr.contains("cert_file"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(PathBuf::from(&dir));
}
