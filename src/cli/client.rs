//! The command line over the admin API: `switchboard events`, `deliveries`, `replay`.
//! Tables for people, `--json` for scripts.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use switchboard::deliver::Client;

pub struct Admin {
    base: String,
    token: Option<String>,
    client: Client,
}

impl Admin {
    pub fn new(base: &str, token: Option<String>) -> Result<Self, switchboard::deliver::client::SetupError> {
        // The admin API is normally on loopback: the delivery SSRF guard does not apply here.
        let guard = switchboard::deliver::ssrf::Guard { allow_private: true, allowlist: Vec::new() };
        let client = Client::new(std::sync::Arc::new(guard))?;
        Ok(Self { base: base.trim_end_matches('/').to_string(), token, client })
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let unreachable = |e: &dyn std::fmt::Display| format!("cannot reach the admin API at {}: {e}", self.base);
        let mut request = Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request =
            request.body(body.map(|b| Bytes::from(b.to_string())).unwrap_or_default()).map_err(|e| unreachable(&e))?;
        let exchange = async {
            let response = self.client.send(request).await.map_err(|e| unreachable(&e))?;
            let status = response.status();
            let body = response.into_body().collect().await.map_err(|e| unreachable(&e))?.to_bytes();
            Ok::<_, String>((status, body))
        };
        let (status, body) =
            tokio::time::timeout(Duration::from_secs(60), exchange).await.map_err(|_| unreachable(&"timed out"))??;
        let text = String::from_utf8_lossy(&body).into_owned();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            Ok(value)
        } else {
            let mut message =
                value["error"]["message"].as_str().map(str::to_owned).unwrap_or_else(|| value.to_string());
            // An invalid tenant: every error, at its JSON pointer.
            for e in value["error"]["errors"].as_array().into_iter().flatten() {
                let at = match (e["line"].as_u64(), e["column"].as_u64()) {
                    (Some(l), Some(c)) => format!(" (line {l}, column {c})"),
                    _ => String::new(),
                };
                message.push_str(&format!(
                    "\n  {}{at}: {}",
                    e["pointer"].as_str().unwrap_or(""),
                    e["message"].as_str().unwrap_or("")
                ));
            }
            Err(format!("{status}: {message}"))
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, String> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> Result<Value, String> {
        self.call(Method::POST, path, body).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Result<Value, String> {
        self.call(Method::PUT, path, Some(body)).await
    }
}

/// `?a=1&b=2` from the options that are set.
pub fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    let q = q.finish();
    if q.is_empty() { q } else { format!("?{q}") }
}

/// A plain text table: a header row and left-aligned columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.clone()));
    }
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn events_table(page: &Value) -> String {
    let rows: Vec<Vec<String>> = page["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| ["event_id", "received_at", "tenant", "source", "call_id"].iter().map(|k| text(&e[*k])).collect())
        .collect();
    let mut out = table(&["EVENT", "RECEIVED", "TENANT", "SOURCE", "CALL"], &rows);
    if let Some(cursor) = page["next_cursor"].as_str() {
        out.push_str(&format!("\nmore: --cursor {cursor}"));
    }
    out
}

pub fn deliveries_table(page: &Value) -> String {
    let rows: Vec<Vec<String>> = page["deliveries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            ["id", "state", "tenant", "destination", "attempts", "event_id", "last_error"]
                .iter()
                .map(|k| text(&d[*k]))
                .collect()
        })
        .collect();
    let mut out = table(&["ID", "STATE", "TENANT", "DESTINATION", "ATTEMPTS", "EVENT", "LAST ERROR"], &rows);
    if let Some(cursor) = page["next_cursor"].as_str() {
        out.push_str(&format!("\nmore: --cursor {cursor}"));
    }
    out
}

pub fn event_text(event: &Value) -> String {
    let mut out = format!(
        "event {}\n  tenant {}  source {}  call {}\n  received {}\n",
        text(&event["event_id"]),
        text(&event["tenant"]),
        text(&event["source"]),
        text(&event["call_id"]),
        text(&event["received_at"])
    );
    if let Some(status) = event["normalized"]["status"].as_str() {
        out.push_str(&format!("  status {status}\n"));
    }
    for d in event["deliveries"].as_array().into_iter().flatten() {
        out.push_str(&format!("\ndelivery {} → {} ({})\n", text(&d["id"]), text(&d["destination"]), text(&d["state"])));
        let rows: Vec<Vec<String>> = d["attempts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                vec![
                    text(&a["at"]),
                    text(&a["status"]),
                    text(&a["error"]),
                    format!("{:.1}", a["latency_ms"].as_f64().unwrap_or(0.0)),
                ]
            })
            .collect();
        out.push_str(&table(&["  AT", "STATUS", "ERROR", "MS"], &rows));
        out.push('\n');
    }
    out
}

/// Bulk replay in chunks, with a progress line; returns the total queued.
pub async fn replay_all(admin: &Admin, filter: Value, chunk: usize, quiet: bool) -> Result<u64, String> {
    let progress = if quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new_spinner() };
    progress.set_style(
        indicatif::ProgressStyle::with_template("{spinner} replayed {pos} deliveries ({per_sec})")
            .expect("static template"),
    );
    let mut total = 0;
    loop {
        let mut body = filter.clone();
        body["limit"] = json!(chunk);
        let queued = admin.post("/v1/replay", Some(body)).await?["queued"].as_u64().unwrap_or(0);
        total += queued;
        progress.set_position(total);
        if queued < chunk as u64 {
            break;
        }
    }
    progress.finish_and_clear();
    Ok(total)
}
