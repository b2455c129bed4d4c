//! Which audit store the tests use: SQLite under the test's data directory
//! (the default), or — when `MQAUDIT_TEST_STORE_URL` names a PostgreSQL
//! server (scripts/test.sh starts one for the audit suite's second pass) —
//! a database of the test's own on it, one per data directory, so a test
//! that reopens its store after a crash finds it again.

use std::path::Path;

use mqaudit::audit::store::Store;

/// The variable naming the PostgreSQL server.
pub const SERVER_ENV: &str = "MQAUDIT_TEST_STORE_URL";
/// The variable a spawned `mqaudit serve` reads its store's URL from.
pub const DATABASE_ENV: &str = "MQAUDIT_TEST_STORE_DB";

/// The PostgreSQL server's URL, when the suite runs on it.
pub fn server() -> Option<String> {
    std::env::var(SERVER_ENV).ok().filter(|u| !u.is_empty())
}

/// The name of `data_dir`'s database: stable for the directory.
fn database_name(data_dir: &Path) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in data_dir.to_string_lossy().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("mqaudit_test_{hash:016x}")
}

/// `data_dir`'s database on `server`, created if new; its URL.
pub async fn database(server: &str, data_dir: &Path) -> String {
    use sqlx::Connection;
    let name = database_name(data_dir);
    let mut admin = sqlx::PgConnection::connect(server)
        .await
        .expect("connect to the test PostgreSQL server");
    let exists = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut admin)
        .await
        .expect("list databases")
        .is_some();
    if !exists {
        // Two tests cannot share a directory, so no race on the name.
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create the test's database");
    }
    let base = server
        .rsplit_once('/')
        .map_or(server, |(base, _)| base)
        .to_string();
    format!("{base}/{name}")
}

/// Open the store of `data_dir` the suite runs on.
pub async fn open(data_dir: &Path) -> Store {
    match server() {
        Some(server) => {
            let url = database(&server, data_dir).await;
            Store::open_postgres(&url).await.expect("PostgreSQL store")
        }
        None => Store::open(data_dir).await.expect("SQLite store"),
    }
}

/// `[audit]` lines naming `data_dir`'s store for a spawned `mqaudit serve`,
/// and the environment it needs.
pub async fn serve_config(data_dir: &Path) -> (String, Vec<(&'static str, String)>) {
    let dir = format!("data_dir = \"{}\"\n", data_dir.display());
    match server() {
        Some(server) => {
            let url = database(&server, data_dir).await;
            (
                format!("{dir}store = \"postgres\"\nstore_url_env = \"{DATABASE_ENV}\"\n"),
                vec![(DATABASE_ENV, url)],
            )
        }
        None => (dir, Vec::new()),
    }
}
