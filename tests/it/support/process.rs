//! The `switchboard` binary itself, started as a child process with JSON logs on stderr,
//! for tests that must kill it.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// The binary the process tests run: `$SWITCHBOARD_BIN` (e.g. the release build, for the
/// attack and memory figures in docs/reliability.md), else the one cargo built for them.
pub fn bin() -> String {
    std::env::var("SWITCHBOARD_BIN").unwrap_or_else(|_| BIN.to_string())
}

pub struct Serve {
    pub child: Child,
    pub ingest: SocketAddr,
    pub admin: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Serve {
    /// Starts `switchboard serve --config <config>` and waits until both listeners are up.
    pub async fn start(config: &Path) -> Self {
        Self::start_env(config, &[]).await
    }

    pub async fn start_env(config: &Path, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(bin())
            .args(["--log-format", "json", "serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting the switchboard binary");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addrs_tx, mut addrs) = watch::channel((None, None));
        let collected = logs.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    let addr = v["addr"].as_str().and_then(|a| a.parse::<SocketAddr>().ok());
                    match v["message"].as_str() {
                        Some("ingest listening") => addrs_tx.send_modify(|a| a.0 = addr),
                        Some("admin listening") => addrs_tx.send_modify(|a| a.1 = addr),
                        _ => {}
                    }
                }
                collected.lock().unwrap().push(line);
            }
        });
        let ready =
            tokio::time::timeout(Duration::from_secs(30), addrs.wait_for(|a| a.0.is_some() && a.1.is_some())).await;
        let (ingest, admin) = match ready {
            Ok(Ok(a)) => (a.0.unwrap(), a.1.unwrap()),
            _ => panic!("switchboard did not start; its log:\n{}", logs.lock().unwrap().join("\n")),
        };
        Self { child, ingest, admin, logs }
    }

    pub fn hook(&self, tenant: &str, source: &str) -> String {
        format!("http://{}/v1/hooks/{tenant}/{source}", self.ingest)
    }

    pub async fn kill9(&mut self) {
        self.child.kill().await.unwrap();
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub async fn terminate(&mut self, within: Duration) -> ExitStatus {
        let pid = self.child.id().expect("still running").to_string();
        let sent = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        tokio::time::timeout(within, self.child.wait()).await.expect("exited in time").unwrap()
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    pub fn log(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Polls `GET path` on the admin API with `token` until `done` holds for the answer,
    /// for at most 20 s; `what` names the wait in the failure.
    pub async fn admin_until(
        &self,
        token: &str,
        path: &str,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let http = super::gateway::client();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let request = http.get(format!("{}{path}", self.admin_url())).bearer_auth(token);
            let value: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
            if done(&value) {
                return value;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}: {value:#}");
            // The admin API has no change notification; poll it.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
