//! The files under `deploy/`, checked by the tools their users run: the
//! systemd unit by `systemd-analyze verify`, the Kubernetes manifests by
//! `kubernetes-validate --strict` against the API schemas (PyPI, installed
//! by scripts/test.sh), and the configuration each ships by our own parser.
//! Each check is first shown to fail on a broken copy, so a pass means
//! something.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(crate::support::unique(name));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

/// `systemd-analyze verify` of `unit`: its complaints (it exits 0 on
/// unknown keys and bad values, and only says so).
fn systemd_complaints(unit: &Path) -> String {
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .expect("systemd-analyze (Debian package systemd; scripts/test.sh installs it)");
    format!(
        "{}{}{}",
        if output.status.success() {
            ""
        } else {
            "non-zero exit\n"
        },
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_systemd_unit_verifies_and_starts_the_real_binary() {
    let text = std::fs::read_to_string(repo("deploy/systemd/mqaudit.service")).expect("unit");
    assert!(
        text.contains("ExecStart=/usr/local/bin/mqaudit serve --config /etc/mqaudit/mqaudit.toml"),
        "the unit starts serve with the documented config path"
    );
    // verify checks that ExecStart's program exists: point it at the
    // binary under test.
    let dir = scratch("mqaudit-unit");
    let unit = dir.join("mqaudit.service");
    std::fs::write(
        &unit,
        text.replace("/usr/local/bin/mqaudit", env!("CARGO_BIN_EXE_mqaudit")),
    )
    .expect("write");
    let broken = dir.join("broken.service");
    std::fs::write(
        &broken,
        text.replace("Type=exec", "Type=exec\nRestartSecs=5")
            .replace("/usr/local/bin/mqaudit", env!("CARGO_BIN_EXE_mqaudit")),
    )
    .expect("write");
    assert!(
        systemd_complaints(&broken).contains("RestartSecs"),
        "systemd-analyze must name a misspelt key, or this test proves nothing"
    );
    assert_eq!(
        systemd_complaints(&unit),
        "",
        "deploy/systemd/mqaudit.service"
    );

    // The command line it runs is one the binary accepts.
    let help = Command::new(env!("CARGO_BIN_EXE_mqaudit"))
        .args(["serve", "--help"])
        .output()
        .expect("mqaudit");
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--config"));
}

fn kubernetes_validate() -> PathBuf {
    let path = std::env::var_os("MQAUDIT_KUBERNETES_VALIDATE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| {
                PathBuf::from(h).join(".cache/mqaudit/venv-deploy/bin/kubernetes-validate")
            })
        })
        .expect("HOME");
    assert!(
        path.exists(),
        "{} is missing: scripts/test.sh installs kubernetes-validate from PyPI",
        path.display()
    );
    path
}

fn validate(files: &[PathBuf]) -> (bool, String) {
    let output = Command::new(kubernetes_validate())
        .args(["--strict", "--quiet"])
        .args(files)
        .output()
        .expect("kubernetes-validate");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

const MANIFESTS: [&str; 2] = [
    "deploy/kubernetes/replicas.yaml",
    "deploy/kubernetes/sidecar.yaml",
];

#[test]
fn the_kubernetes_manifests_validate_against_the_api_schemas() {
    let dir = scratch("mqaudit-k8s");
    let broken = dir.join("broken.yaml");
    let replicas = std::fs::read_to_string(repo(MANIFESTS[0])).expect("manifest");
    std::fs::write(&broken, replicas.replace("  replicas: 2", "  replicaz: 2")).expect("write");
    let (ok, said) = validate(&[broken]);
    assert!(
        !ok && said.contains("replicaz"),
        "kubernetes-validate must reject an unknown field, or this test proves nothing: {said}"
    );
    let files: Vec<PathBuf> = MANIFESTS.iter().map(|m| repo(m)).collect();
    let (ok, said) = validate(&files);
    assert!(ok, "{said}");
}

#[test]
fn the_configuration_each_manifest_ships_is_valid() {
    for manifest in MANIFESTS {
        let text = std::fs::read_to_string(repo(manifest)).expect("manifest");
        let mut configs = 0;
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value: serde_yaml_ng::Value =
                serde::Deserialize::deserialize(document).expect("YAML");
            if value["kind"].as_str() != Some("ConfigMap") {
                continue;
            }
            let toml = value["data"]["mqaudit.toml"]
                .as_str()
                .unwrap_or_else(|| panic!("{manifest}: ConfigMap without mqaudit.toml"));
            let config = mqaudit::config::Config::from_toml_str(toml, |name| {
                (name == "MQAUDIT_STORE_URL")
                    .then(|| "postgres://mqaudit:secret@postgres:5432/mqaudit".to_string())
            })
            .unwrap_or_else(|e| panic!("{manifest}: {e}"));
            assert_eq!(config.audit.data_dir, PathBuf::from("/var/lib/mqaudit"));
            configs += 1;
        }
        assert_eq!(configs, 1, "{manifest}: one ConfigMap with mqaudit.toml");
    }
}
