//! A real PostgreSQL for the tests: `$SWITCHBOARD_TEST_POSTGRES` when set (CI starts one),
//! else a private server started from the machine's binaries by tests/postgres.sh. Each
//! test gets a database of its own. Without any PostgreSQL binaries the tests fail, unless
//! `SWITCHBOARD_SKIP=postgres` asks to skip them (see `skip`).

use std::sync::OnceLock;

fn server() -> Option<&'static str> {
    static URL: OnceLock<Option<String>> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("SWITCHBOARD_TEST_POSTGRES") {
            return Some(url);
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/postgres.sh");
        let output = std::process::Command::new("bash").arg(script).arg("start").output().expect("bash");
        match output.status.code() {
            Some(0) => Some(String::from_utf8(output.stdout).unwrap().trim().to_string()),
            Some(3)
                if super::skip::unavailable(
                    "postgres",
                    "no PostgreSQL server binaries on this machine; the PostgreSQL tests cannot run",
                    "Install Debian's postgresql package",
                ) =>
            {
                None
            }
            _ => panic!("cannot start the test PostgreSQL: {}", String::from_utf8_lossy(&output.stderr)),
        }
    })
    .as_deref()
}

/// A fresh, empty database on the test server, as a `postgres://` URL; `None` when this
/// machine has no PostgreSQL and `SWITCHBOARD_SKIP=postgres` (the caller returns: skipped).
pub async fn database() -> Option<String> {
    let server = server()?;
    let (client, connection) = tokio_postgres::connect(server, tokio_postgres::NoTls).await.unwrap();
    let task = tokio::spawn(connection);
    let name = format!("t_{}", uuid::Uuid::now_v7().simple());
    client.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    drop(client);
    let _ = task.await;
    let (base, _) = server.rsplit_once('/').unwrap();
    Some(format!("{base}/{name}"))
}

/// A PostgreSQL server of one test's own, for tests that take the database down and bring
/// it back (the shared one serves every other test). Removed on drop.
pub struct Private {
    dir: std::path::PathBuf,
    pub url: String,
}

impl Private {
    /// `None` when this machine has no PostgreSQL binaries and skipping them was asked for.
    pub fn start() -> Option<Self> {
        let dir = std::env::temp_dir().join(format!("switchboard-pg-{}", uuid::Uuid::now_v7().simple()));
        let output = Self::script(&dir, "start");
        match output.status.code() {
            Some(0) => Some(Self { url: String::from_utf8(output.stdout).unwrap().trim().to_string(), dir }),
            Some(3)
                if super::skip::unavailable(
                    "postgres",
                    "no PostgreSQL server binaries on this machine",
                    "Install Debian's postgresql package",
                ) =>
            {
                None
            }
            _ => panic!("cannot start a private PostgreSQL: {}", String::from_utf8_lossy(&output.stderr)),
        }
    }

    fn script(dir: &std::path::Path, command: &str) -> std::process::Output {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/postgres.sh");
        std::process::Command::new("bash").arg(script).arg(command).env("SWITCHBOARD_PG_DIR", dir).output().unwrap()
    }

    /// Stops the server (fast shutdown: connections are cut), keeping its data.
    pub fn down(&self) {
        let output = Self::script(&self.dir, "down");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }

    pub fn up(&self) {
        let output = Self::script(&self.dir, "up");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        Self::script(&self.dir, "stop");
    }
}
