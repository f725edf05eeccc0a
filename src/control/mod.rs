//! The control plane: tenants, sources, destinations and secrets managed by API.
//!
//! A change is a read-modify-write of one tenant's document: read it from the store, apply
//! the edit, validate the whole tenant with the same validator and template compiler as
//! tenant files (`document` writes the JSON as TOML and maps errors back to JSON
//! pointers), commit it with the version read (`If-Match`), then swap it into this node's
//! routing. Other nodes follow the catalog's sequence (`follow`) and swap it in within a
//! poll. Nothing is half-applied: a change that does not validate writes nothing.

pub mod document;
pub mod keys;
pub mod playground;
pub mod portal;
pub mod seal;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::Gateway;
use crate::config::{self, Config, Origin, Tenant};
use crate::store::catalog::{AuditEntry, Change, StoredTenant, Written};
use crate::store::{Store, StoreError};
use document::Place;
use seal::{SealError, Sealer};

/// How often a node asks the store whether the catalog changed: a change made on another
/// node is serving here within this, plus the time to compile it.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(200);
/// Concurrent writers to one tenant: a read-modify-write that lost the race is tried again
/// this many times before the caller is told to retry.
const WRITE_TRIES: usize = 4;
/// A secret value's size limit.
const MAX_SECRET_BYTES: usize = 8 * 1024;

/// One thing wrong with a tenant, where the caller wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(flatten)]
    pub place: Place,
    pub message: String,
}

impl Problem {
    fn at(pointer: &str, message: impl Into<String>) -> Self {
        Problem { place: Place { pointer: pointer.into(), line: None, column: None }, message: message.into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    NotFound(String),
    #[error(
        "tenant {0:?} is defined by a file under tenants_dir; change the file, or move it to the API with `switchboard tenants import`"
    )]
    ManagedByFile(String),
    #[error("the tenant is at version {}, not the one in If-Match", current.map_or("none (it does not exist)".to_string(), |v| v.to_string()))]
    PreconditionFailed { current: Option<i64> },
    #[error("the tenant would not be valid; nothing was changed")]
    Invalid(Vec<Problem>),
    #[error("{0}")]
    BadRequest(String),
    #[error("secrets need [admin] secrets_key in the configuration")]
    NoSecretsKey,
    #[error("{0}")]
    Seal(#[from] SealError),
    #[error("the tenant kept changing while this change was made; retry")]
    Contended,
    #[error("the store could not answer; retry later")]
    Store(#[from] StoreError),
}

/// Who makes a change: the admin token, or a tenant-scoped key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Admin,
    Key(String),
}

impl Actor {
    pub fn name(&self) -> String {
        match self {
            Actor::Admin => "admin".to_string(),
            Actor::Key(id) => format!("key:{id}"),
        }
    }
}

/// One change to one tenant.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Create or replace the whole tenant. `secrets` may name existing secrets (a list) or
    /// set values (`{"name": {"value": "…"}}`); secrets it does not mention are kept.
    Tenant(Value),
    DeleteTenant,
    Destination(String, Option<Value>),
    Source(String, Option<Value>),
    Secret(String, Option<String>),
}

impl Edit {
    fn audit(&self, tenant: &str, actor: &Actor) -> AuditEntry {
        let (kind, target, put) = match self {
            Edit::Tenant(_) => ("tenant", tenant, true),
            Edit::DeleteTenant => ("tenant", tenant, false),
            Edit::Destination(id, v) => ("destination", id.as_str(), v.is_some()),
            Edit::Source(id, v) => ("source", id.as_str(), v.is_some()),
            Edit::Secret(name, v) => ("secret", name.as_str(), v.is_some()),
        };
        AuditEntry {
            actor: actor.name(),
            kind: kind.into(),
            target: target.into(),
            action: if put { "put" } else { "delete" }.into(),
        }
    }
}

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Changed {
    /// The tenant's new version (a deleted tenant's last).
    pub version: i64,
    /// What the change put did not exist before: the tenant, or the source, destination or
    /// secret it named.
    pub created: bool,
    /// Pending deliveries cancelled because their destination (or tenant) went.
    pub cancelled: u64,
}

/// What this node serves of the catalog: the last change applied, and each API tenant's
/// version (kept for deleted ones, so a stale change is never applied over a newer one).
#[derive(Debug, Default)]
pub struct Applied {
    pub seq: i64,
    pub versions: HashMap<String, i64>,
}

/// Validates a tenant document (without `id` and `secrets`) into a servable tenant.
pub fn validate(
    id: &str,
    document: &Map<String, Value>,
    secrets: &HashMap<String, Arc<str>>,
    version: i64,
) -> Result<Tenant, Vec<Problem>> {
    let mut full = Map::with_capacity(document.len() + 1);
    full.insert("id".into(), Value::String(id.to_string()));
    full.extend(document.iter().filter(|(k, _)| *k != "id").map(|(k, v)| (k.clone(), v.clone())));
    let written = document::to_toml(&full)
        .map_err(|e| e.into_iter().map(|u| Problem::at(&u.pointer, u.message)).collect::<Vec<_>>())?;
    config::tenant_document(&written.toml, secrets, version).map_err(|errors| {
        errors
            .into_iter()
            .map(|e| Problem {
                place: e
                    .offset
                    .map_or(Place { pointer: String::new(), line: None, column: None }, |o| written.place(o)),
                message: e.message,
            })
            .collect()
    })
}

fn open_secrets(
    sealer: Option<&Sealer>,
    tenant: &str,
    sealed: &[(String, Vec<u8>)],
) -> Result<HashMap<String, Arc<str>>, ControlError> {
    if sealed.is_empty() {
        return Ok(HashMap::new());
    }
    let sealer = sealer.ok_or(ControlError::NoSecretsKey)?;
    sealed.iter().map(|(name, bytes)| Ok((name.clone(), Arc::from(sealer.open(tenant, name, bytes)?)))).collect()
}

fn parse_document(stored: &StoredTenant) -> Map<String, Value> {
    match stored.document.as_deref().map(serde_json::from_str::<Value>) {
        Some(Ok(Value::Object(map))) => map,
        _ => Map::new(),
    }
}

/// Compiles a stored tenant, as every node does when it learns of it.
pub fn compile(stored: &StoredTenant, sealer: Option<&Sealer>) -> Result<Tenant, String> {
    let secrets = open_secrets(sealer, &stored.id, &stored.secrets).map_err(|e| e.to_string())?;
    validate(&stored.id, &parse_document(stored), &secrets, stored.version).map_err(|problems| {
        problems.iter().map(|p| format!("{}: {}", p.place.pointer, p.message)).collect::<Vec<_>>().join("; ")
    })
}

fn object(value: Value, what: &str) -> Result<Map<String, Value>, ControlError> {
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(ControlError::BadRequest(format!("the body must be a JSON object: the {what}"))),
    }
}

fn ids_of(document: &Map<String, Value>, list: &str) -> Vec<String> {
    match document.get(list) {
        Some(Value::Array(items)) => {
            items.iter().filter_map(|i| i.get("id").and_then(Value::as_str).map(str::to_string)).collect()
        }
        _ => Vec::new(),
    }
}

/// Puts (or removes) the element `id` of the array `list`; returns its index, or `None`
/// when removing one that is not there.
fn put_element(document: &mut Map<String, Value>, list: &str, id: &str, element: Option<Value>) -> Option<usize> {
    let items = document.entry(list).or_insert_with(|| Value::Array(Vec::new()));
    if !items.is_array() {
        *items = Value::Array(Vec::new());
    }
    let items = items.as_array_mut().expect("made an array above");
    let found = items.iter().position(|i| i.get("id").and_then(Value::as_str) == Some(id));
    match (element, found) {
        (Some(e), Some(i)) => {
            items[i] = e;
            Some(i)
        }
        (Some(e), None) => {
            items.push(e);
            Some(items.len() - 1)
        }
        (None, Some(i)) => {
            items.remove(i);
            Some(i)
        }
        (None, None) => None,
    }
}

/// An element's body with its `id` first (from the URL; a different one in the body is an error).
fn element(id: &str, body: Value, what: &str) -> Result<Value, ControlError> {
    let body = object(body, what)?;
    if let Some(given) = body.get("id")
        && given.as_str() != Some(id)
    {
        return Err(ControlError::Invalid(vec![Problem::at(
            "/id",
            format!("the {what} id is the one in the URL, {id:?}"),
        )]));
    }
    let mut out = Map::with_capacity(body.len() + 1);
    out.insert("id".into(), Value::String(id.to_string()));
    out.extend(body.into_iter().filter(|(k, _)| k != "id"));
    Ok(Value::Object(out))
}

fn check_secret_name(name: &str, pointer: &str) -> Result<(), ControlError> {
    if config::valid_id(name) {
        Ok(())
    } else {
        Err(ControlError::Invalid(vec![Problem::at(
            pointer,
            format!("secret name {name:?} must be 1 to 64 characters of A-Z, a-z, 0-9, '-' or '_'"),
        )]))
    }
}

fn check_secret_value(value: &str, pointer: &str) -> Result<(), ControlError> {
    if value.is_empty() || value.len() > MAX_SECRET_BYTES {
        return Err(ControlError::Invalid(vec![Problem::at(
            pointer,
            format!("a secret's value must be 1 to {MAX_SECRET_BYTES} bytes"),
        )]));
    }
    Ok(())
}

/// The tenant's document and secrets after `edit`, and the secrets to write.
struct Edited {
    document: Option<Map<String, Value>>,
    secrets: HashMap<String, Arc<str>>,
    secret_writes: Vec<(String, Option<String>)>,
    /// Where the edited element is, to report its problems relative to the body sent.
    element: Option<String>,
    /// The element (or secret) put was new.
    new_element: bool,
}

fn apply_edit(
    tenant: &str,
    edit: Edit,
    live: Option<&StoredTenant>,
    mut secrets: HashMap<String, Arc<str>>,
) -> Result<Edited, ControlError> {
    let missing = || ControlError::NotFound(format!("no tenant {tenant}"));
    let mut document = live.map(parse_document);
    let mut secret_writes = Vec::new();
    let mut at = None;
    let mut new_element = false;
    match edit {
        Edit::Tenant(body) => {
            let mut body = object(body, "tenant")?;
            if let Some(given) = body.remove("id")
                && given.as_str() != Some(tenant)
            {
                return Err(ControlError::Invalid(vec![Problem::at(
                    "/id",
                    format!("the tenant id is the one in the URL, {tenant:?}"),
                )]));
            }
            match body.remove("secrets") {
                None | Some(Value::Null) => {}
                Some(Value::Array(names)) => {
                    for (i, name) in names.iter().enumerate() {
                        let pointer = format!("/secrets/{i}");
                        let name = name.as_str().unwrap_or_default();
                        if !secrets.contains_key(name) {
                            return Err(ControlError::Invalid(vec![Problem::at(
                                &pointer,
                                format!(
                                    "no secret {name:?}; give its value: \"secrets\": {{\"{name}\": {{\"value\": \"…\"}}}}"
                                ),
                            )]));
                        }
                    }
                }
                Some(Value::Object(values)) => {
                    for (name, v) in values {
                        let pointer = format!("/secrets/{}", name.replace('~', "~0").replace('/', "~1"));
                        check_secret_name(&name, &pointer)?;
                        let Some(value) = v.get("value").and_then(Value::as_str) else {
                            return Err(ControlError::Invalid(vec![Problem::at(
                                &pointer,
                                "write a secret as {\"value\": \"…\"}",
                            )]));
                        };
                        check_secret_value(value, &format!("{pointer}/value"))?;
                        secrets.insert(name.clone(), Arc::from(value));
                        secret_writes.push((name, Some(value.to_string())));
                    }
                }
                Some(_) => {
                    return Err(ControlError::Invalid(vec![Problem::at(
                        "/secrets",
                        "secrets are a list of names, or {\"name\": {\"value\": \"…\"}}",
                    )]));
                }
            }
            document = Some(body);
        }
        Edit::DeleteTenant => {
            live.ok_or_else(missing)?;
            document = None;
        }
        Edit::Destination(id, body) => {
            (at, new_element) = element_edit(document.as_mut().ok_or_else(missing)?, "destination", &id, body, tenant)?;
        }
        Edit::Source(id, body) => {
            (at, new_element) = element_edit(document.as_mut().ok_or_else(missing)?, "source", &id, body, tenant)?;
        }
        Edit::Secret(name, value) => {
            live.ok_or_else(missing)?;
            check_secret_name(&name, "/name")?;
            match &value {
                Some(v) => {
                    check_secret_value(v, "/value")?;
                    new_element = secrets.insert(name.clone(), Arc::from(v.as_str())).is_none();
                }
                None => {
                    if secrets.remove(&name).is_none() {
                        return Err(ControlError::NotFound(format!("no secret {name} in tenant {tenant}")));
                    }
                }
            }
            secret_writes.push((name, value));
        }
    }
    Ok(Edited { document, secrets, secret_writes, element: at, new_element })
}

/// Puts or removes one source or destination; returns where a put one is, and whether it
/// is new.
fn element_edit(
    document: &mut Map<String, Value>,
    list: &str,
    id: &str,
    body: Option<Value>,
    tenant: &str,
) -> Result<(Option<String>, bool), ControlError> {
    let element = body.map(|b| element(id, b, list)).transpose()?;
    let putting = element.is_some();
    let new = putting && !ids_of(document, list).iter().any(|i| i == id);
    match put_element(document, list, id, element) {
        Some(i) if putting => Ok((Some(format!("/{list}/{i}")), new)),
        Some(_) => Ok((None, false)),
        None => Err(ControlError::NotFound(format!("no {list} {id} in tenant {tenant}"))),
    }
}

/// Problems inside the element a sub-resource PUT wrote are reported relative to its body.
fn relative(problems: Vec<Problem>, element: Option<&str>) -> Vec<Problem> {
    let Some(prefix) = element else { return problems };
    problems
        .into_iter()
        .map(|mut p| {
            if let Some(rest) = p.place.pointer.strip_prefix(prefix)
                && (rest.is_empty() || rest.starts_with('/'))
            {
                p.place.pointer = rest.to_string();
            }
            p
        })
        .collect()
}

/// The destinations `fresh` takes away from tenants this node serves (`None`: a tenant
/// deleted with all of its destinations).
fn removed_by(current: &crate::config::Config, fresh: &[Update]) -> Vec<(String, Option<String>)> {
    let mut removed = Vec::new();
    for (id, _, now) in fresh {
        let Some(before) = current.tenants.get(id) else { continue };
        match now {
            None => removed.push((id.clone(), None)),
            Some(now) => removed.extend(
                before
                    .destinations
                    .iter()
                    .filter(|d| !now.destinations.iter().any(|n| n.id == d.id))
                    .map(|d| (id.clone(), Some(d.id.clone()))),
            ),
        }
    }
    removed
}

/// Destinations in `before` that `after` no longer has.
fn removed_destinations(before: Option<&StoredTenant>, after: Option<&Map<String, Value>>) -> Vec<String> {
    let before = before.map(|s| ids_of(&parse_document(s), "destination")).unwrap_or_default();
    let after = after.map(|d| ids_of(d, "destination")).unwrap_or_default();
    before.into_iter().filter(|id| !after.contains(id)).collect()
}

/// One tenant's new state for this node: its version, and the tenant (`None`: deleted).
pub type Update = (String, i64, Option<Arc<Tenant>>);

/// Loads every API tenant at start, beside the file tenants of `config`. A tenant defined
/// both ways, or stored in a form that no longer loads, stops the start with its reason.
pub async fn load(store: &dyn Store, config: &Config, sealer: Option<&Sealer>) -> Result<(Config, Applied), String> {
    let rows = store.catalog_changes(0).await.map_err(|e| format!("cannot read the tenant catalog: {e}"))?;
    let mut applied = Applied::default();
    let mut tenants = config.tenants.clone();
    let mut errors = Vec::new();
    for row in rows {
        applied.seq = applied.seq.max(row.seq);
        applied.versions.insert(row.id.clone(), row.version);
        if row.document.is_none() {
            continue;
        }
        if let Some(Origin::File(path)) = tenants.get(&row.id).map(|t| &t.origin) {
            errors.push(format!(
                "tenant {:?} is defined in {} and through the API; delete one of them",
                row.id,
                path.display()
            ));
            continue;
        }
        match compile(&row, sealer) {
            Ok(tenant) => {
                tenants.insert(row.id.clone(), Arc::new(tenant));
            }
            Err(e) => {
                errors.push(format!("tenant {:?} (version {}) as stored does not load: {e}", row.id, row.version))
            }
        }
    }
    if errors.is_empty() { Ok((config.with_tenants(tenants), applied)) } else { Err(errors.join("\n")) }
}

/// Follows the catalog: changes made on other nodes are applied here within `FOLLOW_EVERY`.
pub async fn follow(gateway: Arc<Gateway>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(FOLLOW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = gateway.catch_up().await {
            tracing::warn!(error = %e, "cannot read the tenant catalog; will try again");
        }
    }
}

impl Gateway {
    /// Applies catalog changes committed since the last ones applied.
    async fn catch_up(&self) -> Result<(), StoreError> {
        let seen = self.catalog.lock().await.seq;
        if self.store.catalog_seq().await? <= seen {
            return Ok(());
        }
        let rows = self.store.catalog_changes(seen).await?;
        let Some(last) = rows.iter().map(|r| r.seq).max() else { return Ok(()) };
        let sealer = self.sealer.clone();
        let updates = tokio::task::spawn_blocking(move || {
            rows.into_iter()
                .filter_map(|row| {
                    if row.document.is_none() {
                        return Some((row.id, row.version, None));
                    }
                    match compile(&row, sealer.as_deref()) {
                        Ok(tenant) => Some((row.id, row.version, Some(Arc::new(tenant)))),
                        Err(e) => {
                            tracing::error!(tenant = %row.id, version = row.version, error = %e,
                                "a tenant changed on another node does not load here; this node keeps the last version it had");
                            None
                        }
                    }
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        self.apply_catalog(updates, Some(last)).await;
        Ok(())
    }

    /// Swaps tenants into this node's routing, unless it already has them at a newer
    /// version. `seq`: the catalog position these bring this node to (local writes leave
    /// it, so changes from other nodes committed before them are still read).
    pub(crate) async fn apply_catalog(&self, updates: Vec<Update>, seq: Option<i64>) {
        let mut applied = self.catalog.lock().await;
        if let Some(seq) = seq {
            applied.seq = applied.seq.max(seq);
        }
        let current = self.config.load_full();
        let fresh: Vec<Update> = updates
            .into_iter()
            .filter(|(id, version, _)| {
                let newer = applied.versions.get(id).is_none_or(|have| have < version);
                let file = current.tenants.get(id).is_some_and(|t| matches!(t.origin, Origin::File(_)));
                if newer && file {
                    tracing::error!(tenant = %id, "a tenant of the API has the id of a tenant file here; the file's stays");
                }
                newer && !file
            })
            .collect();
        if fresh.is_empty() {
            return;
        }
        let removed = removed_by(&current, &fresh);
        let mut tenants = current.tenants.clone();
        for (id, version, tenant) in &fresh {
            applied.versions.insert(id.clone(), *version);
            match tenant {
                Some(t) => tenants.insert(id.clone(), t.clone()),
                None => tenants.remove(id),
            };
        }
        let config = Arc::new(current.with_tenants(tenants));
        let ids: Vec<&str> = fresh.iter().map(|(id, ..)| id.as_str()).collect();
        let routed = self.ingest.update(config.clone(), &ids);
        self.dispatcher.apply_tenants(&config, &ids);
        self.config.store(config);
        if !removed.is_empty() {
            self.ingest.cancel_left_behind(routed, removed);
        }
        tracing::info!(tenants = ?ids, "tenants applied from the catalog");
    }

    /// Makes one change to one tenant, validated whole, committed, and serving on this
    /// node before it returns (on the others within `FOLLOW_EVERY`).
    pub async fn edit_tenant(
        &self,
        tenant: &str,
        edit: Edit,
        if_match: Option<i64>,
        actor: &Actor,
    ) -> Result<Changed, ControlError> {
        if !config::valid_id(tenant) {
            return Err(match edit {
                Edit::Tenant(_) => ControlError::Invalid(vec![Problem::at(
                    "/id",
                    format!("tenant id {tenant:?} must be 1 to 64 characters of A-Z, a-z, 0-9, '-' or '_'"),
                )]),
                _ => ControlError::NotFound(format!("no tenant {tenant}")),
            });
        }
        if self.config().tenants.get(tenant).is_some_and(|t| matches!(t.origin, Origin::File(_))) {
            return Err(ControlError::ManagedByFile(tenant.to_string()));
        }
        let audit = edit.audit(tenant, actor);
        for _ in 0..WRITE_TRIES {
            let stored = self.store.catalog_tenant(tenant).await?;
            let live = stored.as_ref().filter(|s| s.document.is_some());
            let current = live.map(|s| s.version);
            if if_match.is_some() && if_match != current {
                return Err(ControlError::PreconditionFailed { current });
            }
            let secrets = open_secrets(self.sealer.as_deref(), tenant, live.map_or(&[][..], |s| &s.secrets))?;
            let edited = apply_edit(tenant, edit.clone(), live, secrets)?;
            let compiled = match &edited.document {
                Some(document) => Some(
                    validate(tenant, document, &edited.secrets, 0)
                        .map_err(|p| ControlError::Invalid(relative(p, edited.element.as_deref())))?,
                ),
                None => None,
            };
            let mut secrets = Vec::with_capacity(edited.secret_writes.len());
            for (name, value) in &edited.secret_writes {
                let sealed = match value {
                    Some(v) => Some(self.sealer.as_ref().ok_or(ControlError::NoSecretsKey)?.seal(tenant, name, v)?),
                    None => None,
                };
                secrets.push((name.clone(), sealed));
            }
            let change = Change {
                tenant: tenant.to_string(),
                expect: current,
                cancel: removed_destinations(live, edited.document.as_ref()),
                document: edited.document.map(|d| Value::Object(d).to_string()),
                secrets,
                audit: audit.clone(),
            };
            match self.store.catalog_write(change).await? {
                Written::VersionMismatch { current } if if_match.is_some() => {
                    return Err(ControlError::PreconditionFailed { current });
                }
                Written::VersionMismatch { .. } => continue,
                Written::Done { version, created, cancelled, .. } => {
                    let tenant_now = compiled.map(|mut t| {
                        t.origin = Origin::Api { version };
                        Arc::new(t)
                    });
                    self.apply_catalog(vec![(tenant.to_string(), version, tenant_now)], None).await;
                    if cancelled > 0 {
                        tracing::info!(tenant, cancelled, "pending deliveries cancelled");
                    }
                    return Ok(Changed { version, created: created || edited.new_element, cancelled });
                }
            }
        }
        Err(ControlError::Contended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn every_error_of_a_document_is_reported_at_its_pointer() {
        let document = doc(json!({
            "source": [{ "id": "w", "provider": "wavecell", "auth": [{ "scheme": "none" }] }],
            "destination": [
                { "id": "crm", "url": "https://crm.example/<<id>>" },
                {
                    "id": "bad",
                    "url": "https://x.example/",
                    "body": "{\n  \"id\": <<id>>,\n  \"s\": <<nope>>\n}",
                    "timeout": "soon",
                    "colour": "red",
                },
            ],
        }));
        let problems = validate("acme", &document, &HashMap::new(), 1).unwrap_err();
        let at: Vec<(&str, Option<usize>, Option<usize>)> =
            problems.iter().map(|p| (p.place.pointer.as_str(), p.place.line, p.place.column)).collect();
        assert!(at.contains(&("/destination/1/colour", None, None)), "{problems:#?}");
        let problems = validate(
            "acme",
            &doc({
                let mut d = Value::Object(document.clone());
                d["destination"][1].as_object_mut().unwrap().remove("colour");
                d
            }),
            &HashMap::new(),
            1,
        )
        .unwrap_err();
        let at: Vec<(&str, Option<usize>, Option<usize>)> =
            problems.iter().map(|p| (p.place.pointer.as_str(), p.place.line, p.place.column)).collect();
        // Column 10: the field name inside `<<nope>>`.
        assert!(at.contains(&("/destination/1/body", Some(3), Some(10))), "{problems:#?}");
        assert!(at.iter().any(|(p, ..)| *p == "/destination/1/timeout"), "{problems:#?}");
    }

    #[test]
    fn a_valid_document_compiles_with_its_secrets() {
        let document = doc(json!({
            "source": [{ "id": "w", "provider": "wavecell", "auth": [{ "scheme": "token", "header": "X-Token", "secret": "inbound" }] }],
            "destination": [{ "id": "crm", "url": "https://crm.example/<<id>>", "headers": { "Authorization": "Bearer <<secret.crm>>" } }],
        }));
        let missing = validate("acme", &document, &HashMap::new(), 1).unwrap_err();
        assert!(missing.iter().any(|p| p.place.pointer == "/destination/0/headers/Authorization"), "{missing:#?}");
        assert!(missing.iter().any(|p| p.place.pointer.starts_with("/source/0/auth/0")), "{missing:#?}");
        let secrets: HashMap<String, Arc<str>> =
            [("crm".to_string(), Arc::from("s3")), ("inbound".to_string(), Arc::from("t0k"))].into();
        let tenant = validate("acme", &document, &secrets, 7).unwrap();
        assert_eq!(tenant.id, "acme");
        assert_eq!(tenant.origin, Origin::Api { version: 7 });
        assert_eq!(tenant.sources[0].destinations, vec![0]);
    }

    #[test]
    fn a_template_error_inside_an_escaped_string_does_not_panic() {
        // Written as a basic string (it ends in a quote): offsets count escapes, and may
        // land inside the é.
        for body in ["\"é<<x'", "é\\<<nope>>'", "«<<status | nope>>»'"] {
            let document = doc(json!({ "destination": [{ "id": "d", "url": "https://x.example/", "body": body }] }));
            let problems = validate("acme", &document, &HashMap::new(), 1).unwrap_err();
            assert!(problems.iter().any(|p| p.place.pointer == "/destination/0/body"), "{body}: {problems:?}");
        }
    }

    #[test]
    fn a_sub_resource_reports_problems_relative_to_its_body() {
        let problems = vec![Problem::at("/destination/2/url", "x"), Problem::at("/destination/20/url", "y")];
        let relative = relative(problems, Some("/destination/2"));
        assert_eq!(relative[0].place.pointer, "/url");
        assert_eq!(relative[1].place.pointer, "/destination/20/url");
    }
}
