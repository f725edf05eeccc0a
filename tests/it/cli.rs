//! The command line: `check` reports every config error with file:line:column, `sink`
//! prints what it receives, and the shipped example config is valid.

use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::gateway::{client, write_config};
use crate::support::process::BIN;

#[test]
fn check_accepts_the_shipped_example_config() {
    let output = Command::new(BIN)
        .args(["check", "--config", concat!(env!("CARGO_MANIFEST_DIR"), "/config/switchboard.toml")])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("ok (1 tenants, 3 destinations)"));
}

#[test]
fn check_reports_every_error_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = "id = \"acme\"\n[[source]]\nid = \"s\"\nprovider = \"nope\"\nauth = [{ scheme = \"none\" }]\n[[destination]]\nid = \"d\"\nurl = \"http://x/\"\ntimeout = \"soon\"\n";
    let config = write_config(dir.path(), "max_body_bytes = 0", "", &[tenant]);
    let output = Command::new(BIN).args(["check", "--config"]).arg(&config).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let main = config.display().to_string();
    let tenant_file = dir.path().join("tenants/t0.toml").display().to_string();
    assert!(stderr.contains(&format!("{main}:5:18: max_body_bytes must be between 1 and")), "{stderr}");
    assert!(stderr.contains(&format!("{tenant_file}:4:12: unknown provider \"nope\"")), "{stderr}");
    assert!(stderr.contains(&format!("{tenant_file}:9:11: invalid duration \"soon\"")), "{stderr}");
    assert_eq!(stderr.lines().count(), 3, "{stderr}");
}

#[tokio::test]
async fn sink_prints_each_request_and_answers_its_status() {
    let mut sink = tokio::process::Command::new(BIN)
        .args(["--log-format", "json", "sink", "--listen", "127.0.0.1:0", "--status", "202"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut log = BufReader::new(sink.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = log.next_line().await.unwrap() {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["message"] == "sink listening" {
                return v["addr"].as_str().unwrap().to_string();
            }
        }
        panic!("the sink exited");
    })
    .await
    .unwrap();
    let response = client()
        .post(format!("http://{addr}/ack/receive"))
        .header("content-type", "application/json")
        .body(r#"{"status":"ANSWER"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let mut out = BufReader::new(sink.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = out.next_line().await.unwrap() {
            let end = line == "---";
            printed.push(line);
            if end {
                break;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(printed[0], "POST /ack/receive HTTP/1.1");
    assert!(printed.contains(&"content-type: application/json".to_string()), "{printed:?}");
    assert!(printed.contains(&r#"{"status":"ANSWER"}"#.to_string()), "{printed:?}");
}

#[test]
fn check_places_template_errors_inside_the_template() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = concat!(
        "id = \"acme\"\n",
        "[[source]]\nid = \"s\"\nprovider = \"generic\"\nauth = [{ scheme = \"none\" }]\n",
        "[[destination]]\nid = \"d\"\nurl = 'http://x.example/a?s=<<status | shout>>'\n",
        "body = \'\'\'\n{\n  \"id\": \"<<id>>\",\n  \"token\": \"<<secret.nope>>\"\n}\n\'\'\'\n",
    );
    let config = write_config(dir.path(), "", "", &[tenant]);
    let output = Command::new(BIN).args(["check", "--config"]).arg(&config).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let file = dir.path().join("tenants/t0.toml").display().to_string();
    // Line 8 is the url; the filter name starts at column 40.
    assert!(stderr.contains(&format!("{file}:8:40: unknown filter `shout`")), "{stderr}");
    // The body's third line holds the undeclared secret, from column 15.
    assert!(stderr.contains(&format!("{file}:12:15: secret `nope` is not declared")), "{stderr}");
}
