//! Configuration, parsed and validated once into types that cannot hold invalid states:
//! addresses parsed, durations typed, URLs parsed, destinations resolved per source.
//! Nothing here is re-parsed per request.

mod load;
mod raw;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};

pub use load::{ConfigError, ConfigErrors, load, load_with_env, tenant_document};

#[derive(Debug)]
pub struct Config {
    /// The main file, as named on the command line.
    pub path: PathBuf,
    pub server: Server,
    pub store: Store,
    pub tenants: HashMap<String, Arc<Tenant>>,
    /// The bearer token of the admin API; without one the API refuses every call.
    pub admin_token: Option<Arc<str>>,
    /// Seals the secrets of tenants managed by API; without one they cannot have secrets.
    pub secrets_key: Option<SecretsKey>,
    pub portal: Portal,
    /// How finely metric series are labelled; read at start.
    pub metrics_detail: MetricsDetail,
}

/// Which labels say where a metric series belongs (`[metrics] detail`). Each level drops a
/// label, and with it a factor of series: ten thousand tenants of five destinations made
/// over a million series at `Destination`, mostly histogram buckets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MetricsDetail {
    /// The tenant, and the source or destination.
    #[default]
    Destination,
    /// The tenant alone: its sources' and destinations' series add up into one.
    Tenant,
    /// Neither: one series per metric and outcome for the whole gateway.
    Gateway,
}

/// The embeddable tenant portal: who may frame it, and its look.
#[derive(Debug, Clone, Default)]
pub struct Portal {
    /// Origins allowed to frame `/portal`; empty: none.
    pub frame_ancestors: Vec<String>,
    /// Colours as `#rgb` or `#rrggbb`.
    pub accent: Option<String>,
    pub background: Option<String>,
    /// The logo's bytes and content type.
    pub logo: Option<(Bytes, &'static str)>,
}

impl Config {
    /// The same settings, serving `tenants`.
    pub fn with_tenants(&self, tenants: HashMap<String, Arc<Tenant>>) -> Self {
        Config {
            path: self.path.clone(),
            server: self.server.clone(),
            store: self.store.clone(),
            tenants,
            admin_token: self.admin_token.clone(),
            secrets_key: self.secrets_key.clone(),
            portal: self.portal.clone(),
            metrics_detail: self.metrics_detail,
        }
    }
}

/// Tenant, source, destination and secret ids: 1 to 64 of A-Z, a-z, 0-9, '-' or '_'
/// (they appear in URLs, metric labels and file names).
pub fn valid_id(v: &str) -> bool {
    !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The key sealing API-managed secrets at rest. Never printed.
#[derive(Clone)]
pub struct SecretsKey(pub [u8; 32]);

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(..)")
    }
}

/// Where a tenant is defined: a file under `tenants_dir` (read-only through the API), or
/// the control-plane API, at a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Api { version: i64 },
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub max_body_bytes: usize,
    /// Bytes of callback bodies being read, parsed or committed at once, across all
    /// connections; past it ingest answers 503 instead of growing (at least `max_body_bytes`).
    pub max_body_memory_bytes: usize,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub drain_timeout: Duration,
    /// Ingest answers 503 once this many deliveries are pending, instead of growing without bound.
    pub max_pending_deliveries: u64,
    /// Whether deliveries may reach loopback, private, link-local and similar addresses.
    pub allow_private_destinations: bool,
    /// Private networks deliveries may reach even when the above is false.
    pub private_destination_allowlist: Vec<ipnet::IpNet>,
    /// Peers whose X-Forwarded-For is believed when finding the client address.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// A token bucket: `per_second` sustained, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: std::num::NonZeroU32,
    pub burst: std::num::NonZeroU32,
}

impl RateLimit {
    pub fn limiter(&self) -> governor::DefaultDirectRateLimiter {
        governor::RateLimiter::direct(governor::Quota::per_second(self.per_second).allow_burst(self.burst))
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    pub backend: Backend,
    pub synchronous: Synchronous,
    pub max_size_bytes: Option<u64>,
    /// Delivered deliveries (and events left with none pending) are purged after this.
    pub retention: Duration,
    /// Dead deliveries are kept this long, for inspection and replay.
    pub dead_retention: Duration,
}

#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite {
        path: PathBuf,
    },
    /// Several nodes share one queue. The password, if any, is already in `config`.
    Postgres {
        config: Box<tokio_postgres::Config>,
        pool_size: usize,
    },
}

/// SQLite's `synchronous` pragma: `Full` fsyncs every group commit, `Normal` only at checkpoints
/// (an OS crash may then lose the last commits; a process crash loses nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    Full,
    Normal,
}

#[derive(Debug)]
pub struct Tenant {
    pub id: String,
    pub rate_limit: Option<RateLimit>,
    pub sources: Vec<Source>,
    pub destinations: Vec<Arc<Destination>>,
    pub origin: Origin,
}

impl Tenant {
    pub fn source(&self, id: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.id == id)
    }
}

#[derive(Debug)]
pub struct Source {
    pub id: String,
    pub provider: Provider,
    pub response: Option<FixedResponse>,
    /// Indexes into the tenant's `destinations`: the fan-out of this source, resolved at load.
    pub destinations: Vec<usize>,
    /// Zone for provider times written without one.
    pub timezone: jiff::tz::TimeZone,
    /// How long a repeated callback is recognized as a repeat; `None` turns dedupe off.
    pub dedupe_window: Option<Duration>,
    /// Every scheme must pass; `[Scheme::None]` when the source is explicitly open.
    pub auth: Vec<crate::auth::Scheme>,
    pub rate_limit: Option<RateLimit>,
    /// The destination whose answer is the provider's answer (call control).
    pub responder: Option<Responder>,
    /// What names an event's call, for destinations that order or supersede by call.
    pub call_key: CallKey,
    /// Order a call's events by the provider's sequence rather than by arrival.
    pub sequence: Option<SequenceOrder>,
    /// The URL the provider calls, when a proxy between them changes it: what Twilio and
    /// Plivo signatures are checked against.
    pub public_url: Option<String>,
}

/// Where an event's call key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallKey {
    /// A normalized field: the call id (`id`, the default), or `session_id` to keep every
    /// leg of a conversation in one order.
    Field(crate::normalize::Field),
    /// A field of the provider's payload, by path.
    Payload(Vec<String>),
}

/// `order_by = "provider_sequence"`: the provider numbers a call's callbacks; an event that
/// arrives ahead of its turn waits at most `window` for the ones before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceOrder {
    /// Payload path of the sequence number (an integer, or integer text); `None`: the
    /// normalized `sequence`, where the provider profile reads one (Twilio, Telnyx).
    pub path: Option<Vec<String>>,
    pub window: Duration,
}

/// What a destination does with the events of one call (see docs/configuration.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallRules {
    /// `ordering = "per_call"`: one call's deliveries go out one at a time, in order; other
    /// calls are not held back.
    pub ordered: bool,
    /// A status the call has already left (a later one is delivered or queued) is not sent.
    pub supersede: bool,
    /// A live status (queued to in progress) still unsent after this long is not sent.
    pub live_ttl: Option<Duration>,
}

impl CallRules {
    /// Whether deliveries to this destination carry their call's key and rank.
    pub fn by_call(&self) -> bool {
        self.ordered || self.supersede || self.live_ttl.is_some()
    }
}

/// A source's synchronous responder: the callback is forwarded to it at once and its answer
/// handed back to the provider, or `fallback` if it fails or is late.
#[derive(Debug, Clone)]
pub struct Responder {
    /// Index into the tenant's `destinations`.
    pub destination: usize,
    pub timeout: Duration,
    pub fallback: FixedResponse,
    /// Statuses the provider gives meaning to, relayed from the responder as they are
    /// (besides the destination's success and `pass_through_codes`).
    pub pass_through: Vec<u16>,
}

/// A provider profile: how its callbacks are normalized, signed and answered
/// (`crate::normalize::profile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Wavecell,
    Telecmi,
    Mobtexting,
    Callerdesk,
    Twilio,
    Plivo,
    Exotel,
    Vonage,
    Telnyx,
    Knowlarity,
    Ozonetel,
    Myoperator,
    Generic,
}

impl Provider {
    pub const ALL: [Provider; 13] = [
        Self::Wavecell,
        Self::Telecmi,
        Self::Mobtexting,
        Self::Callerdesk,
        Self::Twilio,
        Self::Plivo,
        Self::Exotel,
        Self::Vonage,
        Self::Telnyx,
        Self::Knowlarity,
        Self::Ozonetel,
        Self::Myoperator,
        Self::Generic,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Wavecell => "wavecell",
            Self::Telecmi => "telecmi",
            Self::Mobtexting => "mobtexting",
            Self::Callerdesk => "callerdesk",
            Self::Twilio => "twilio",
            Self::Plivo => "plivo",
            Self::Exotel => "exotel",
            Self::Vonage => "vonage",
            Self::Telnyx => "telnyx",
            Self::Knowlarity => "knowlarity",
            Self::Ozonetel => "ozonetel",
            Self::Myoperator => "myoperator",
            Self::Generic => "generic",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == s)
    }
}

/// What ingest answers the provider once the event is committed, when the provider expects
/// something other than our default JSON acknowledgement.
#[derive(Debug, Clone)]
pub struct FixedResponse {
    pub status: StatusCode,
    pub content_type: HeaderValue,
    pub body: Bytes,
}

impl FixedResponse {
    /// A 200 with this content type and body.
    pub fn of(content_type: &'static str, body: &'static str) -> Self {
        Self {
            status: StatusCode::OK,
            content_type: HeaderValue::from_static(content_type),
            body: Bytes::from_static(body.as_bytes()),
        }
    }
}

#[derive(Debug)]
pub struct Destination {
    pub tenant: String,
    pub id: String,
    /// URL, headers and body, as templates.
    pub request: crate::template::request::RequestTemplate,
    pub method: Method,
    /// Which events this destination receives (every event when empty).
    pub when: crate::fanout::When,
    /// Deliveries are paced to this rate; paced deliveries wait in the queue.
    pub rate_limit: Option<RateLimit>,
    /// Standard Webhooks signing keys (decoded `whsec_` secrets); empty: unsigned.
    pub signing_keys: Vec<Vec<u8>>,
    /// As a responder: statuses relayed to the provider besides `success_codes` (e.g. 302).
    pub pass_through_codes: Vec<u16>,
    /// As a responder: the largest answer relayed; a larger one gets the fallback.
    pub max_response_bytes: usize,
    pub success_codes: Vec<u16>,
    /// What a failed answer means beyond "retry": give up at once, or pause the destination.
    pub on_status: OnStatus,
    pub timeout: Duration,
    pub max_in_flight: usize,
    pub retry: RetryPolicy,
    /// `None`: every pending delivery keeps its own retry schedule however many fail.
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Per-call ordering, superseding and the live ttl.
    pub calls: CallRules,
}

impl Destination {
    pub fn is_success(&self, status: u16) -> bool {
        self.success_codes.contains(&status)
    }
}

/// What a non-success status does to its delivery (and its destination).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusAction {
    /// Retry with backoff, within `retry`'s attempts and deadline.
    Retry,
    /// The request can never succeed as it is: dead now (replayable once fixed).
    Dead,
    /// The destination is gone: pause it (stored, resumable by API); the delivery waits.
    Pause,
}

impl StatusAction {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "retry" => Self::Retry,
            "dead" => Self::Dead,
            "pause" => Self::Pause,
            _ => return None,
        })
    }
}

/// A destination's `on_status` overrides over the defaults: `410` pauses (RFC 9110: gone
/// for good, and the Standard Webhooks advice to stop sending); `400`, `413` and `422` are
/// dead at once (the same bytes will be refused the same way); everything else retries.
/// `401`, `403` and `404` retry by default: a receiver's credentials or route are often
/// fixed within the retry deadline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OnStatus {
    overrides: Vec<(u16, StatusAction)>,
}

impl OnStatus {
    pub fn new(overrides: Vec<(u16, StatusAction)>) -> Self {
        Self { overrides }
    }

    pub fn action(&self, status: u16) -> StatusAction {
        if let Some((_, action)) = self.overrides.iter().find(|(s, _)| *s == status) {
            return *action;
        }
        match status {
            410 => StatusAction::Pause,
            400 | 413 | 422 => StatusAction::Dead,
            _ => StatusAction::Retry,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Measured from the event's arrival; no attempt is scheduled past it.
    pub deadline: Duration,
}

/// When a destination counts as down and how it is probed (see `deliver::breaker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreaker {
    /// Failed attempts in a row that open the circuit.
    pub failures: std::num::NonZeroU32,
    /// How long the first opening lasts; each failed probe doubles it.
    pub cooldown: Duration,
    pub max_cooldown: Duration,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self {
            failures: std::num::NonZeroU32::new(5).expect("non-zero"),
            cooldown: Duration::from_secs(5),
            max_cooldown: Duration::from_secs(60),
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(600),
            deadline: Duration::from_secs(24 * 3600),
        }
    }
}
