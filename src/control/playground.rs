//! The template playground behind the console: a destination (one of the tenant's, or one
//! being written) rendered against a payload (a stored event's, a provider's documented
//! callback, or one pasted), by the same validator and the same request builder that send
//! deliveries. Secrets are rendered as `‹secret:NAME›` and credentials headers as
//! `‹masked›`: the playground never shows a value.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{ControlError, Problem, element_edit, relative, validate};
use crate::Gateway;
use crate::config::{Origin, Provider};
use crate::deliver::preview::{self, Callback, Preview};
use crate::normalize::fixture;

/// What to render.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Render {
    /// A destination being written (the tenant's fields for one `[[destination]]`).
    pub destination: Option<Value>,
    /// Or one of the tenant's destinations, by id.
    pub destination_id: Option<String>,
    /// The payload: a stored event's…
    pub event_id: Option<uuid::Uuid>,
    /// …a provider's documented callback (`switchboard providers`)…
    pub provider: Option<String>,
    pub fixture: Option<String>,
    /// …or a body sent to `source`.
    pub source: Option<String>,
    pub body: Option<String>,
    pub content_type: Option<String>,
}

/// The id a destination being written gets when it has none.
const DRAFT: &str = "playground";

fn secret_names(document: &Map<String, Value>) -> Vec<String> {
    match document.get("secrets") {
        Some(Value::Object(m)) => m.keys().cloned().collect(),
        Some(Value::Array(a)) => a.iter().filter_map(|n| n.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    }
}

/// Headers whose values are credentials whatever wrote them (a template may hold one inline).
const CREDENTIALS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

fn masked(mut preview: Preview) -> Preview {
    for (name, value) in &mut preview.headers {
        if CREDENTIALS.contains(&name.to_ascii_lowercase().as_str()) {
            *value = "‹masked›".to_string();
        }
    }
    preview
}

impl Gateway {
    /// The tenant's document as written (from the catalog, or its file) and its secret names.
    async fn document_of(&self, tenant: &str) -> Result<(Map<String, Value>, Vec<String>), ControlError> {
        let missing = || ControlError::NotFound(format!("no tenant {tenant}"));
        let config = self.config();
        match config.tenants.get(tenant).map(|t| &t.origin) {
            Some(Origin::File(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| ControlError::BadRequest(e.to_string()))?;
                let Ok(Value::Object(mut document)) = super::document::from_toml(&text) else { return Err(missing()) };
                let names = secret_names(&document);
                document.remove("secrets");
                document.remove("id");
                Ok((document, names))
            }
            Some(Origin::Api { .. }) => {
                let stored =
                    self.store.catalog_tenant(tenant).await?.filter(|s| s.document.is_some()).ok_or_else(missing)?;
                let document = super::parse_document(&stored);
                Ok((document, stored.secrets.into_iter().map(|(n, _)| n).collect()))
            }
            None => Err(missing()),
        }
    }

    pub async fn playground(&self, tenant: &str, render: Render) -> Result<Preview, ControlError> {
        self.render_masked(tenant, render).await.map(masked)
    }

    async fn render_masked(&self, tenant: &str, render: Render) -> Result<Preview, ControlError> {
        let (mut document, names) = self.document_of(tenant).await?;
        let masked: HashMap<String, Arc<str>> =
            names.iter().map(|n| (n.clone(), Arc::from(format!("‹secret:{n}›")))).collect();
        let (destination, at) = match (render.destination, render.destination_id) {
            (Some(body), _) => {
                let id = body.get("id").and_then(Value::as_str).unwrap_or(DRAFT).to_string();
                let (at, _) = element_edit(&mut document, "destination", &id, Some(body), tenant)?;
                (id, at)
            }
            (None, Some(id)) => (id, None),
            (None, None) => {
                return Err(ControlError::BadRequest("give a destination, or a destination_id".into()));
            }
        };
        let compiled = match validate(tenant, &document, &masked, 0) {
            Ok(compiled) => compiled,
            // A secret used as a Standard Webhooks key must look like one (`whsec_…`): masked
            // as one, the tenant is the same tenant.
            Err(problems) => {
                let keyed: HashMap<String, Arc<str>> = names
                    .iter()
                    .map(|n| {
                        let key = crate::auth::signatures::base64_encode(format!("masked secret {n}").as_bytes());
                        (n.clone(), Arc::from(format!("whsec_{key}")))
                    })
                    .collect();
                validate(tenant, &document, &keyed, 0)
                    .map_err(|_| ControlError::Invalid(relative(problems, at.as_deref())))?
            }
        };
        if !compiled.destinations.iter().any(|d| d.id == destination) {
            return Err(ControlError::NotFound(format!("no destination {destination} in tenant {tenant}")));
        }
        let server = self.config().server.clone();
        let bad = |e: String| ControlError::Invalid(vec![Problem::at("", e)]);
        if let Some(id) = render.event_id {
            let event = self
                .store
                .event(id)
                .await?
                .filter(|e| e.summary.tenant == tenant)
                .ok_or_else(|| ControlError::NotFound(format!("no event {id}")))?;
            let callback = Callback::Payload {
                source: &event.summary.source,
                body: &event.body,
                content_type: event.content_type.as_deref().unwrap_or("application/json"),
                query: event.query.as_deref(),
            };
            return preview::render(&server, &compiled, &destination, callback).map_err(bad);
        }
        if let (Some(provider), Some(kind)) = (&render.provider, &render.fixture) {
            let provider = Provider::parse(provider).ok_or_else(|| bad(format!("no provider {provider:?}")))?;
            let found = fixture::find(provider, kind).map_err(bad)?;
            return preview::render(&server, &compiled, &destination, Callback::Fixture(&found)).map_err(bad);
        }
        let body = render.body.unwrap_or_default();
        let source = match render.source {
            Some(s) => s,
            None => {
                compiled.sources.first().map(|s| s.id.clone()).ok_or_else(|| bad("the tenant has no source".into()))?
            }
        };
        let content_type = render.content_type.unwrap_or_else(|| "application/json".into());
        let callback =
            Callback::Payload { source: &source, body: body.as_bytes(), content_type: &content_type, query: None };
        preview::render(&server, &compiled, &destination, callback).map_err(bad)
    }
}
