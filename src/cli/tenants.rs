//! `switchboard tenants export` and `import`: tenant files and the control-plane API, both
//! ways, so a platform can move tenants between GitOps files and the API.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use switchboard::control::document;

use super::client::{Admin, query};

/// Fields the API adds to a tenant that are not part of its file.
const META: [&str; 4] = ["version", "managed_by", "updated_at", "secrets"];

/// The environment variable an exported secret is read from when the file is loaded or
/// imported again: values never leave the gateway.
fn secret_variable(tenant: &str, name: &str) -> String {
    let clean = |s: &str| s.to_ascii_uppercase().replace('-', "_");
    format!("SWITCHBOARD_SECRET_{}_{}", clean(tenant), clean(name))
}

/// Writes each tenant (every one managed through the API when `ids` is empty) as
/// `<dir>/<id>.toml`; returns the files written.
pub async fn export(admin: &Admin, dir: &Path, ids: Vec<String>) -> Result<Vec<PathBuf>, String> {
    let ids = if ids.is_empty() { api_tenants(admin).await? } else { ids };
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut written = Vec::new();
    for id in ids {
        let tenant = admin.get(&format!("/v1/tenants/{id}")).await?;
        let Value::Object(mut fields) = tenant else { return Err(format!("tenant {id}: not an object")) };
        let version = fields.get("version").cloned().unwrap_or(Value::Null);
        let names: Vec<String> = fields
            .get("secrets")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|n| n.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        for meta in META {
            fields.remove(meta);
        }
        if !names.is_empty() {
            let secrets: Map<String, Value> =
                names.iter().map(|n| (n.clone(), json!({ "env": secret_variable(&id, n) }))).collect();
            fields.insert("secrets".into(), Value::Object(secrets));
        }
        let toml = document::to_toml(&fields).map_err(|e| format!("tenant {id}: {:?}", e))?.toml;
        let path = dir.join(format!("{id}.toml"));
        let header = format!(
            "# Tenant {id}, exported from the control plane at version {version}.\n\
             # Secret values are never exported: each [secrets] entry names the environment\n\
             # variable to hold it when this file is loaded or imported.\n"
        );
        std::fs::write(&path, format!("{header}{toml}"))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

async fn api_tenants(admin: &Admin) -> Result<Vec<String>, String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = query(&[("limit", Some("1000")), ("cursor", cursor.as_deref())]);
        let page = admin.get(&format!("/v1/tenants{q}")).await?;
        for t in page["tenants"].as_array().into_iter().flatten() {
            if t["managed_by"] == "api"
                && let Some(id) = t["id"].as_str()
            {
                ids.push(id.to_string());
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return Ok(ids),
        }
    }
}

/// PUTs each tenant file to the API. Secrets written `{ env = "VAR" }` or
/// `{ file = "path" }` are read here and sent as values (sealed by the gateway).
pub async fn import(admin: &Admin, files: &[PathBuf]) -> Result<Vec<(String, i64)>, String> {
    let mut done = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let tenant = document::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let Value::Object(mut fields) = tenant else { return Err(format!("{}: not a table", path.display())) };
        let Some(id) = fields.remove("id").and_then(|v| v.as_str().map(str::to_string)) else {
            return Err(format!("{}: no tenant id", path.display()));
        };
        if let Some(Value::Object(secrets)) = fields.remove("secrets") {
            let dir = path.parent().unwrap_or(Path::new("."));
            let mut values = Map::new();
            for (name, source) in secrets {
                let value = match (source["env"].as_str(), source["file"].as_str()) {
                    (Some(var), None) => std::env::var(var).map_err(|_| {
                        format!("{}: secret {name:?}: environment variable {var} is not set", path.display())
                    })?,
                    (None, Some(file)) => std::fs::read_to_string(dir.join(file))
                        .map(|v| v.trim_end_matches(['\r', '\n']).to_string())
                        .map_err(|e| format!("{}: secret {name:?}: cannot read {file}: {e}", path.display()))?,
                    _ => return Err(format!("{}: secret {name:?} must be {{ env }} or {{ file }}", path.display())),
                };
                values.insert(name, json!({ "value": value }));
            }
            fields.insert("secrets".into(), Value::Object(values));
        }
        let answer = admin
            .put(&format!("/v1/tenants/{id}"), Value::Object(fields))
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        done.push((id, answer["version"].as_i64().unwrap_or_default()));
    }
    Ok(done)
}
