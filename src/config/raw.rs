//! The TOML shapes exactly as written. Every value that `validate` must check keeps its
//! span, so an error can point at file:line:column. Nothing outside `config` sees these.

use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

pub type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Main {
    pub server: Server,
    #[serde(default)]
    pub store: Store,
    #[serde(default)]
    pub admin: Admin,
    #[serde(default)]
    pub metrics: Metrics,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub detail: Option<S<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub token: Option<S<Secret>>,
    /// Seals tenant secrets written through the API.
    pub secrets_key: Option<S<Secret>>,
    #[serde(default)]
    pub portal: Portal,
}

/// The tenant portal a platform embeds in its own product.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Portal {
    /// Origins allowed to frame `/portal` (`frame-ancestors`).
    pub frame_ancestors: Option<Vec<S<String>>>,
    pub accent: Option<S<String>>,
    pub background: Option<S<String>>,
    /// A logo image file (PNG, SVG, JPEG or WebP), relative to the main file.
    pub logo: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub listen: S<String>,
    pub admin_listen: Option<S<String>>,
    pub max_body_bytes: Option<S<u64>>,
    pub max_body_memory_bytes: Option<S<u64>>,
    pub tenants_dir: Option<S<String>>,
    pub max_connections: Option<S<u64>>,
    pub header_read_timeout: Option<S<String>>,
    pub body_read_timeout: Option<S<String>>,
    pub idle_timeout: Option<S<String>>,
    pub drain_timeout: Option<S<String>>,
    pub max_pending_deliveries: Option<S<u64>>,
    pub allow_private_destinations: Option<bool>,
    pub private_destination_allowlist: Option<Vec<S<String>>>,
    pub trusted_proxies: Option<Vec<S<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Store {
    pub url: Option<S<String>>,
    /// PostgreSQL only: the password, when it is not in the URL.
    pub password: Option<S<Secret>>,
    /// PostgreSQL only: connections per node.
    pub pool_size: Option<S<u64>>,
    pub synchronous: Option<S<String>>,
    pub max_size_bytes: Option<S<u64>>,
    pub retention: Option<S<String>>,
    pub dead_retention: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    pub id: S<String>,
    #[serde(default)]
    pub secrets: IndexMap<String, S<Secret>>,
    pub rate_limit: Option<S<RateLimit>>,
    #[serde(default, rename = "source")]
    pub sources: Vec<Source>,
    #[serde(default, rename = "destination")]
    pub destinations: Vec<Destination>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    pub env: Option<String>,
    pub file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub id: S<String>,
    pub provider: S<String>,
    pub response: Option<S<Response>>,
    pub timezone: Option<S<String>>,
    pub dedupe_window: Option<S<String>>,
    pub auth: Option<S<Vec<S<Auth>>>>,
    pub rate_limit: Option<S<RateLimit>>,
    pub respond_with: Option<S<String>>,
    pub respond_timeout: Option<S<String>>,
    pub fallback_response: Option<S<Response>>,
    pub queue_responder: Option<bool>,
    /// What names the call for per-call ordering: a normalized field or `payload.<path>`.
    pub call_key: Option<S<String>>,
    /// `"commit"` (default) or `"provider_sequence"`.
    pub order_by: Option<S<String>>,
    /// `payload.<path>`: the provider's sequence number.
    pub sequence: Option<S<String>>,
    pub reorder_window: Option<S<String>>,
    /// The absolute URL the provider calls, for schemes that sign the URL.
    pub public_url: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: Option<u32>,
}

/// One secret name, or two while rotating.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub enum Names {
    One(String),
    Many(Vec<String>),
}

impl Names {
    pub fn list(&self) -> Vec<&str> {
        match self {
            Names::One(n) => vec![n.as_str()],
            Names::Many(ns) => ns.iter().map(String::as_str).collect(),
        }
    }
}

/// Every field any scheme uses; which apply is checked per scheme.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    pub scheme: S<String>,
    pub header: Option<S<String>>,
    pub query: Option<S<String>>,
    pub prefix: Option<S<String>>,
    pub secret: Option<S<Names>>,
    pub username: Option<S<String>>,
    pub algorithm: Option<S<String>>,
    pub encoding: Option<S<String>>,
    pub timestamp_header: Option<S<String>>,
    pub tolerance: Option<S<String>>,
    pub public_url: Option<S<String>>,
    pub public_key: Option<S<String>>,
    pub cidrs: Option<Vec<S<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    pub status: Option<u16>,
    pub content_type: Option<String>,
    pub body: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    pub id: S<String>,
    pub url: S<String>,
    pub method: Option<S<String>>,
    pub sources: Option<Vec<S<String>>>,
    pub success_codes: Option<S<Vec<S<u16>>>>,
    pub timeout: Option<S<String>>,
    pub max_in_flight: Option<S<u64>>,
    pub retry: Option<Retry>,
    pub circuit_breaker: Option<CircuitBreaker>,
    pub headers: Option<IndexMap<String, S<String>>>,
    pub body: Option<S<String>>,
    pub form: Option<S<IndexMap<String, S<String>>>>,
    pub content_type: Option<S<String>>,
    pub when: Option<IndexMap<String, S<Vec<S<String>>>>>,
    pub rate_limit: Option<S<RateLimit>>,
    pub signing_secret: Option<S<Names>>,
    pub pass_through_codes: Option<S<Vec<S<u16>>>>,
    pub max_response_bytes: Option<S<u64>>,
    /// `{ 401 = "dead", 404 = "retry", 410 = "pause" }`
    pub on_status: Option<IndexMap<String, S<String>>>,
    /// `"none"` (default) or `"per_call"`.
    pub ordering: Option<S<String>>,
    pub supersede: Option<bool>,
    pub live_ttl: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    pub max_attempts: Option<S<u64>>,
    pub initial_backoff: Option<S<String>>,
    pub max_backoff: Option<S<String>>,
    pub deadline: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreaker {
    /// 0 turns the breaker off.
    pub failures: Option<S<u64>>,
    pub cooldown: Option<S<String>>,
    pub max_cooldown: Option<S<String>>,
}
