//! A private PostgreSQL server for tests that need real SQL: the Debian
//! package's binaries, a fresh data directory, 127.0.0.1 on a free port,
//! trust authentication, stopped on drop. When the tests run as root (CI),
//! the server runs as the `postgres` user, because PostgreSQL refuses root.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running server.
pub struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    /// Connection string for user `mqaudit`, database `postgres`.
    pub url: String,
}

fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is required (Debian package postgresql; scripts/test.sh installs it)")
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("no /usr/lib/postgresql/*/bin/initdb")
}

fn as_server_user(program: &Path, args: &[String]) -> Command {
    let root = uid_is_root();
    if root {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(program)
            .args(args);
        command
    } else {
        let mut command = Command::new(program);
        command.args(args);
        command
    }
}

/// Root check without libc: the Uid line of /proc/self/status.
fn uid_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

impl Postgres {
    /// Start a server (blocking).
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(super::unique("mqaudit-pg"));
        std::fs::create_dir_all(&dir).expect("dir");
        if uid_is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(status.success());
        }
        let data = dir.join("data").to_string_lossy().into_owned();
        let init = as_server_user(
            &bin.join("initdb"),
            &[
                "-D".into(),
                data.clone(),
                "-A".into(),
                "trust".into(),
                "-U".into(),
                "mqaudit".into(),
                "--no-sync".into(),
            ],
        )
        .output()
        .expect("initdb");
        assert!(
            init.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let port = super::free_port();
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            dir.display()
        );
        let log = dir.join("server.log").to_string_lossy().into_owned();
        let start = as_server_user(
            &bin.join("pg_ctl"),
            &[
                "-D".into(),
                data,
                "-o".into(),
                options,
                "-l".into(),
                log,
                "-w".into(),
                "start".into(),
            ],
        )
        .output()
        .expect("pg_ctl start");
        assert!(
            start.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&start.stdout),
            String::from_utf8_lossy(&start.stderr)
        );
        Postgres {
            url: format!("postgres://mqaudit@127.0.0.1:{port}/postgres"),
            dir,
            bin,
        }
    }
}

impl Postgres {
    /// Restart the server (fast shutdown: open sessions are terminated,
    /// queries in flight fail), on the same port (blocking).
    pub fn restart(&self) {
        let data = self.dir.join("data").to_string_lossy().into_owned();
        // The log file again: without it the new server writes to (and
        // holds open) pg_ctl's output, and waiting for that never ends.
        let log = self.dir.join("server.log").to_string_lossy().into_owned();
        let output = as_server_user(
            &self.bin.join("pg_ctl"),
            &[
                "-D".into(),
                data,
                "-l".into(),
                log,
                "-m".into(),
                "fast".into(),
                "-w".into(),
                "restart".into(),
            ],
        )
        .output()
        .expect("pg_ctl restart");
        assert!(
            output.status.success(),
            "pg_ctl restart: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.join("data").to_string_lossy().into_owned();
        let _ = as_server_user(
            &self.bin.join("pg_ctl"),
            &[
                "-D".into(),
                data,
                "-m".into(),
                "immediate".into(),
                "stop".into(),
            ],
        )
        .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
