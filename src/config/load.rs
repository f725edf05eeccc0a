//! Loading: read the main file and every tenant file, deserialize, then validate into the
//! typed config. Validation collects every error it can find, each with file:line:column,
//! rather than stopping at the first; only a file that does not parse stops early (for that
//! file alone).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use serde::de::DeserializeOwned;

use super::raw::{self, S};
use super::{
    Backend, CallKey, CallRules, CircuitBreaker, Config, Destination, FixedResponse, MetricsDetail, OnStatus, Origin,
    Portal, Provider, RateLimit, Responder, RetryPolicy, SecretsKey, SequenceOrder, Server, Source, StatusAction,
    Store, Synchronous, Tenant,
};
use crate::auth::{Algorithm, Encoding, Scheme, TokenAt};
use crate::fanout::When;
use crate::normalize::Field;
use crate::template::request::{BodyTemplate, RequestTemplate};
use crate::template::{Kind, Template, TemplateError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column, when the error has a place in the file.
    pub position: Option<(usize, usize)>,
    /// The byte offset in the text validated, where `position` is.
    pub offset: Option<usize>,
    pub message: String,
}

impl ConfigError {
    /// Loading itself failed (not the file's content).
    pub fn task_failed(message: String) -> Self {
        Self { file: PathBuf::new(), position: None, offset: None, message }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => {
                write!(f, "{}:{line}:{column}: {}", self.file.display(), self.message)
            }
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Every error found, in file order.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// One file being validated: its path and text (to turn spans into line:column), and the
/// shared error list.
struct File<'a> {
    path: &'a Path,
    text: &'a str,
    errors: &'a mut Vec<ConfigError>,
}

impl File<'_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.path.to_path_buf(),
            position: Some(line_column(self.text, span.start)),
            offset: Some(span.start),
            message: message.into(),
        });
    }

    /// A template error, placed inside the TOML string that holds the template (exact for
    /// literal strings, close for basic strings with escapes).
    fn template_error(&mut self, span: Range<usize>, e: TemplateError) {
        let raw = &self.text[span.start.min(self.text.len())..];
        let opening = if raw.starts_with("'''") || raw.starts_with("\"\"\"") {
            3 + if raw[3..].starts_with("\r\n") { 2 } else { usize::from(raw[3..].starts_with('\n')) }
        } else {
            1
        };
        let at = span.start + opening + e.offset;
        self.error(at..at, e.message);
    }

    fn duration(&mut self, value: &Option<S<String>>, default: Duration) -> Duration {
        let Some(value) = value else { return default };
        match humantime::parse_duration(value.get_ref()) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.error(value.span(), "duration must be greater than zero");
                default
            }
            Err(e) => {
                self.error(
                    value.span(),
                    format!(
                        "invalid duration {:?} ({e}); write e.g. \"250ms\", \"10s\", \"5m\", \"24h\"",
                        value.get_ref()
                    ),
                );
                default
            }
        }
    }

    fn ranged(&mut self, value: &Option<S<u64>>, default: u64, range: Range<u64>, what: &str) -> u64 {
        let Some(value) = value else { return default };
        let v = *value.get_ref();
        if range.contains(&v) {
            v
        } else {
            self.error(value.span(), format!("{what} must be between {} and {}", range.start, range.end - 1));
            default
        }
    }

    fn id(&mut self, value: &S<String>, what: &str) {
        let v = value.get_ref();
        if !super::valid_id(v) {
            self.error(
                value.span(),
                format!("{what} id {v:?} must be 1 to 64 characters of A-Z, a-z, 0-9, '-' or '_'"),
            );
        }
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    // An offset computed through escapes may land inside a character: back to its start.
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn read(path: &Path, errors: &mut Vec<ConfigError>) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) => {
            errors.push(ConfigError {
                file: path.to_path_buf(),
                position: None,
                offset: None,
                message: format!("cannot read: {e}"),
            });
            None
        }
    }
}

fn parse<T: DeserializeOwned>(path: &Path, text: &str, errors: &mut Vec<ConfigError>) -> Option<T> {
    match toml::from_str(text) {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(ConfigError {
                file: path.to_path_buf(),
                position: e.span().map(|s| line_column(text, s.start)),
                offset: e.span().map(|s| s.start),
                message: e.message().trim_end().to_string(),
            });
            None
        }
    }
}

/// Loads and validates the main config file and every `*.toml` in its tenants directory.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with_env(path, &|name| std::env::var(name).ok())
}

/// As `load`, with `env` standing in for the process environment.
pub fn load_with_env(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let text = read(path, &mut errors).ok_or_else(|| ConfigErrors(errors.clone()))?;
    let main: raw::Main = parse(path, &text, &mut errors).ok_or_else(|| ConfigErrors(errors.clone()))?;
    let base = path.parent().unwrap_or(Path::new("."));

    let mut file = File { path, text: &text, errors: &mut errors };
    let server = server(&mut file, &main.server);
    let store = store(&mut file, &main.store, base, env);
    let admin_token = main.admin.token.as_ref().and_then(|t| resolve_secret(&mut file, "admin token", t, env));
    let secrets_key = main.admin.secrets_key.as_ref().and_then(|k| secrets_key(&mut file, k, env));
    let portal = portal(&mut file, &main.admin.portal, base);
    let metrics_detail = match main.metrics.detail.as_ref().map(|d| (d, d.get_ref().as_str())) {
        None | Some((_, "destination")) => MetricsDetail::Destination,
        Some((_, "tenant")) => MetricsDetail::Tenant,
        Some((_, "gateway")) => MetricsDetail::Gateway,
        Some((d, other)) => {
            let message = format!("detail must be \"destination\", \"tenant\" or \"gateway\", not {other:?}");
            file.error(d.span(), message);
            MetricsDetail::Destination
        }
    };
    let tenants_dir = base.join(main.server.tenants_dir.as_ref().map_or("tenants", |d| d.get_ref()));

    let mut tenants: HashMap<String, Arc<Tenant>> = HashMap::new();
    let mut defined_in: HashMap<String, PathBuf> = HashMap::new();
    for tenant_path in tenant_files(&tenants_dir, path, &mut errors) {
        let Some(text) = read(&tenant_path, &mut errors) else {
            continue;
        };
        let Some(raw) = parse::<raw::Tenant>(&tenant_path, &text, &mut errors) else {
            continue;
        };
        let mut file = File { path: &tenant_path, text: &text, errors: &mut errors };
        let secrets = secrets(&mut file, &raw, env);
        let tenant = tenant(&mut file, &raw, &secrets, Origin::File(tenant_path.clone()));
        if let Some(other) = defined_in.get(&tenant.id) {
            let message = format!("tenant {:?} is already defined in {}", tenant.id, other.display());
            file.error(raw.id.span(), message);
            continue;
        }
        defined_in.insert(tenant.id.clone(), tenant_path.clone());
        tenants.insert(tenant.id.clone(), Arc::new(tenant));
    }

    if errors.is_empty() {
        Ok(Config {
            path: path.to_path_buf(),
            server,
            store,
            tenants,
            admin_token,
            secrets_key,
            portal,
            metrics_detail,
        })
    } else {
        Err(ConfigErrors(errors))
    }
}

fn tenant_files(dir: &Path, main: &Path, errors: &mut Vec<ConfigError>) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            errors.push(ConfigError {
                file: main.to_path_buf(),
                position: None,
                offset: None,
                message: format!("cannot read tenants_dir {}: {e}", dir.display()),
            });
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    files
}

fn socket_addr(file: &mut File, value: &S<String>) -> Option<SocketAddr> {
    match value.get_ref().parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            file.error(value.span(), format!("{:?} is not an address like \"127.0.0.1:8080\"", value.get_ref()));
            None
        }
    }
}

fn server(file: &mut File, raw: &raw::Server) -> Server {
    let unspecified: SocketAddr = ([127, 0, 0, 1], 0).into();
    let listen = socket_addr(file, &raw.listen).unwrap_or(unspecified);
    let admin_listen = match &raw.admin_listen {
        Some(a) => socket_addr(file, a).unwrap_or(unspecified),
        None => ([127, 0, 0, 1], 8081).into(),
    };
    let max_body_bytes = file.ranged(&raw.max_body_bytes, 256 * 1024, 1..(64 << 20) + 1, "max_body_bytes");
    let max_body_memory_bytes =
        file.ranged(&raw.max_body_memory_bytes, 64 << 20, 1..(16 << 30) + 1, "max_body_memory_bytes");
    if let Some(memory) = &raw.max_body_memory_bytes
        && max_body_memory_bytes < max_body_bytes
    {
        file.error(
            memory.span(),
            format!(
                "max_body_memory_bytes ({max_body_memory_bytes}) must be at least max_body_bytes ({max_body_bytes})"
            ),
        );
    }
    Server {
        listen,
        admin_listen,
        max_body_bytes: max_body_bytes as usize,
        max_body_memory_bytes: max_body_memory_bytes.max(max_body_bytes) as usize,
        max_connections: file.ranged(&raw.max_connections, 4096, 1..1_000_001, "max_connections") as usize,
        header_read_timeout: file.duration(&raw.header_read_timeout, Duration::from_secs(10)),
        body_read_timeout: file.duration(&raw.body_read_timeout, Duration::from_secs(30)),
        idle_timeout: file.duration(&raw.idle_timeout, Duration::from_secs(60)),
        drain_timeout: file.duration(&raw.drain_timeout, Duration::from_secs(10)),
        max_pending_deliveries: file.ranged(
            &raw.max_pending_deliveries,
            5_000_000,
            1..u64::MAX,
            "max_pending_deliveries",
        ),
        allow_private_destinations: raw.allow_private_destinations.unwrap_or(false),
        private_destination_allowlist: cidrs(file, &raw.private_destination_allowlist),
        trusted_proxies: cidrs(file, &raw.trusted_proxies),
    }
}

fn store(file: &mut File, raw: &raw::Store, base: &Path, env: &dyn Fn(&str) -> Option<String>) -> Store {
    let default_path = base.join("data/switchboard.db");
    let backend = match &raw.url {
        None => Backend::Sqlite { path: default_path },
        Some(url) => {
            let text = url.get_ref();
            if let Some(p) = text.strip_prefix("sqlite://").filter(|p| !p.is_empty()) {
                Backend::Sqlite { path: base.join(p) }
            } else if text.starts_with("postgres://") || text.starts_with("postgresql://") {
                postgres(file, raw, url, env)
            } else {
                file.error(
                    url.span(),
                    format!(
                        "unsupported store url {text:?}; write \"sqlite://path/to/file.db\" or \"postgres://user@host:5432/db\""
                    ),
                );
                Backend::Sqlite { path: default_path }
            }
        }
    };
    // Keys of the other backend are mistakes, not silently ignored settings.
    let (kind, foreign) = match backend {
        Backend::Sqlite { .. } => (
            "postgres://",
            [
                ("password", raw.password.as_ref().map(|p| p.span())),
                ("pool_size", raw.pool_size.as_ref().map(|p| p.span())),
            ],
        ),
        Backend::Postgres { .. } => (
            "sqlite://",
            [
                ("synchronous", raw.synchronous.as_ref().map(|p| p.span())),
                ("max_size_bytes", raw.max_size_bytes.as_ref().map(|p| p.span())),
            ],
        ),
    };
    for (key, span) in foreign {
        if let Some(span) = span {
            file.error(span, format!("{key} applies to a {kind} store only"));
        }
    }
    let synchronous = match raw.synchronous.as_ref().map(|s| (s, s.get_ref().as_str())) {
        None | Some((_, "full")) => Synchronous::Full,
        Some((_, "normal")) => Synchronous::Normal,
        Some((s, other)) => {
            file.error(s.span(), format!("synchronous must be \"full\" or \"normal\", not {other:?}"));
            Synchronous::Full
        }
    };
    let max_size_bytes =
        raw.max_size_bytes.as_ref().map(|_| file.ranged(&raw.max_size_bytes, 0, 65536..u64::MAX, "max_size_bytes"));
    let retention = file.duration(&raw.retention, Duration::from_secs(7 * 24 * 3600));
    let dead_retention = file.duration(&raw.dead_retention, Duration::from_secs(30 * 24 * 3600));
    Store { backend, synchronous, max_size_bytes, retention, dead_retention }
}

fn postgres(file: &mut File, raw: &raw::Store, url: &S<String>, env: &dyn Fn(&str) -> Option<String>) -> Backend {
    let mut config = match url.get_ref().parse::<tokio_postgres::Config>() {
        Ok(config) => config,
        Err(e) => {
            file.error(url.span(), format!("invalid postgres url: {e}"));
            tokio_postgres::Config::new()
        }
    };
    if config.get_hosts().is_empty() {
        file.error(url.span(), "the postgres url names no host");
    }
    if let Some(password) = &raw.password {
        if config.get_password().is_some() {
            file.error(password.span(), "the password is given twice: in the url and as password");
        } else if let Some(value) = resolve_secret(file, "password", password, env) {
            config.password(value.as_bytes());
        }
    }
    if config.get_application_name().is_none() {
        config.application_name("switchboard");
    }
    let pool_size = file.ranged(&raw.pool_size, 16, 1..1025, "pool_size") as usize;
    Backend::Postgres { config: Box::new(config), pool_size }
}

fn cidrs(file: &mut File, values: &Option<Vec<S<String>>>) -> Vec<ipnet::IpNet> {
    let mut nets = Vec::new();
    for value in values.iter().flatten() {
        let text = value.get_ref();
        let parsed = text.parse::<ipnet::IpNet>().or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(net) => nets.push(net),
            Err(_) => file.error(value.span(), format!("{text:?} is not a network like \"10.0.0.0/8\" or an address")),
        }
    }
    nets
}

fn rate_limit(file: &mut File, raw: &Option<S<raw::RateLimit>>) -> Option<RateLimit> {
    let raw = raw.as_ref()?;
    let per_second = std::num::NonZeroU32::new(raw.get_ref().per_second);
    let burst = std::num::NonZeroU32::new(raw.get_ref().burst.unwrap_or(raw.get_ref().per_second));
    match (per_second, burst) {
        (Some(per_second), Some(burst)) => Some(RateLimit { per_second, burst }),
        _ => {
            file.error(raw.span(), "rate_limit needs per_second (and burst, if given) of at least 1");
            None
        }
    }
}

/// The secrets a scheme names (one, or two while rotating), resolved.
fn named_secrets(file: &mut File, names: &S<raw::Names>, secrets: &HashMap<String, Arc<str>>) -> Vec<Arc<str>> {
    let mut resolved = Vec::new();
    for name in names.get_ref().list() {
        match secrets.get(name) {
            Some(value) => resolved.push(value.clone()),
            None => file.error(names.span(), format!("secret {name:?} is not declared in the tenant's [secrets]")),
        }
    }
    resolved
}

fn header_name(file: &mut File, value: &S<String>) -> http::HeaderName {
    http::HeaderName::from_bytes(value.get_ref().as_bytes()).unwrap_or_else(|_| {
        file.error(value.span(), format!("{:?} is not a valid header name", value.get_ref()));
        http::HeaderName::from_static("x-invalid")
    })
}

fn scheme(
    file: &mut File,
    raw: &S<raw::Auth>,
    secrets: &HashMap<String, Arc<str>>,
    provider: Provider,
) -> Option<Scheme> {
    let a = raw.get_ref();
    let mut name = a.scheme.get_ref().as_str();
    // `scheme = "provider"`: the one the source's provider signs its callbacks with.
    if name == "provider" {
        let profile = crate::normalize::profile::of(provider);
        let Some(scheme) = profile.signature.scheme() else {
            file.error(
                a.scheme.span(),
                format!(
                    "provider {:?} does not sign its callbacks; use token, basic or ip_allow (see docs/providers.md)",
                    provider.name()
                ),
            );
            return None;
        };
        name = scheme;
    }
    let applies: &[&str] = match name {
        "none" => &[],
        "token" => &["header", "query", "prefix", "secret"],
        "basic" => &["username", "secret"],
        "hmac" => &["algorithm", "header", "prefix", "encoding", "timestamp_header", "tolerance", "secret"],
        "standard-webhooks" => &["secret"],
        "twilio" | "plivo-v3" => &["secret", "public_url"],
        "telnyx" => &["public_key", "tolerance"],
        "vonage-jwt" => &["secret", "tolerance"],
        "ip_allow" => &["cidrs"],
        other => {
            file.error(
                a.scheme.span(),
                format!("unknown auth scheme {other:?}; expected none, token, basic, hmac, standard-webhooks, twilio, plivo-v3, telnyx, vonage-jwt, ip_allow or provider"),
            );
            return None;
        }
    };
    let present = [
        ("header", a.header.is_some()),
        ("query", a.query.is_some()),
        ("prefix", a.prefix.is_some()),
        ("secret", a.secret.is_some()),
        ("username", a.username.is_some()),
        ("algorithm", a.algorithm.is_some()),
        ("encoding", a.encoding.is_some()),
        ("timestamp_header", a.timestamp_header.is_some()),
        ("tolerance", a.tolerance.is_some()),
        ("public_url", a.public_url.is_some()),
        ("public_key", a.public_key.is_some()),
        ("cidrs", a.cidrs.is_some()),
    ];
    let mut ok = true;
    for (key, is_present) in present {
        if is_present && !applies.contains(&key) {
            file.error(raw.span(), format!("`{key}` does not apply to auth scheme {name:?}"));
            ok = false;
        }
    }
    let needs = |file: &mut File, key: &str, present: bool| {
        if !present {
            file.error(raw.span(), format!("auth scheme {name:?} needs `{key}`"));
        }
        present
    };
    let secret_list = |file: &mut File| match &a.secret {
        Some(names) => named_secrets(file, names, secrets),
        None => {
            needs(file, "secret", false);
            Vec::new()
        }
    };
    let prefix = a.prefix.as_ref().map(|p| p.get_ref().clone()).unwrap_or_default();
    let scheme = match name {
        "none" => Scheme::None,
        "token" => {
            let at = match (&a.header, &a.query) {
                (Some(h), None) => TokenAt::Header(header_name(file, h)),
                (None, Some(q)) => TokenAt::Query(q.get_ref().clone()),
                _ => {
                    file.error(raw.span(), "auth scheme \"token\" needs exactly one of `header` or `query`");
                    TokenAt::Query(String::new())
                }
            };
            Scheme::Token { at, prefix, secrets: secret_list(file) }
        }
        "basic" => {
            needs(file, "username", a.username.is_some());
            let username = a.username.as_ref().map(|u| u.get_ref().clone()).unwrap_or_default();
            Scheme::Basic { username, secrets: secret_list(file) }
        }
        "hmac" => {
            let algorithm = match &a.algorithm {
                None => Algorithm::Sha256,
                Some(alg) => Algorithm::parse(alg.get_ref()).unwrap_or_else(|| {
                    file.error(alg.span(), "algorithm must be sha1, sha256 or sha512");
                    Algorithm::Sha256
                }),
            };
            let encoding = match a.encoding.as_ref().map(|e| (e, e.get_ref().as_str())) {
                None | Some((_, "hex")) => Encoding::Hex,
                Some((_, "base64")) => Encoding::Base64,
                Some((e, _)) => {
                    file.error(e.span(), "encoding must be hex or base64");
                    Encoding::Hex
                }
            };
            let header = match &a.header {
                Some(h) => header_name(file, h),
                None => {
                    needs(file, "header", false);
                    http::HeaderName::from_static("x-signature")
                }
            };
            let timestamp = a.timestamp_header.as_ref().map(|h| {
                let tolerance = file.duration(&a.tolerance, Duration::from_secs(300));
                (header_name(file, h), tolerance)
            });
            Scheme::Hmac { algorithm, header, prefix, encoding, timestamp, secrets: secret_list(file) }
        }
        "standard-webhooks" => {
            let keys = secret_list(file)
                .iter()
                .filter_map(|s| {
                    let key = crate::auth::signatures::standard_key(s);
                    if key.is_none() {
                        file.error(raw.span(), "a standard-webhooks secret is whsec_ followed by base64");
                    }
                    key
                })
                .collect();
            Scheme::StandardWebhooks { keys }
        }
        "twilio" => Scheme::Twilio { public_url: public_url(file, &a.public_url), secrets: secret_list(file) },
        "plivo-v3" => Scheme::PlivoV3 { public_url: public_url(file, &a.public_url), secrets: secret_list(file) },
        "telnyx" => {
            let key = a.public_key.as_ref().and_then(|k| {
                let key = crate::auth::telnyx::public_key(k.get_ref());
                if key.is_none() {
                    file.error(k.span(), "public_key must be a base64 Ed25519 public key (32 bytes)");
                }
                key
            });
            needs(file, "public_key", a.public_key.is_some());
            let tolerance = file.duration(&a.tolerance, Duration::from_secs(300));
            Scheme::Telnyx { public_key: key?, tolerance }
        }
        "vonage-jwt" => {
            let tolerance = file.duration(&a.tolerance, Duration::from_secs(300));
            Scheme::VonageJwt { secrets: secret_list(file), tolerance }
        }
        "ip_allow" => {
            needs(file, "cidrs", a.cidrs.is_some());
            Scheme::IpAllow { cidrs: cidrs(file, &a.cidrs) }
        }
        _ => return None,
    };
    ok.then_some(scheme)
}

/// `public_url`: the absolute URL the provider calls, without a query (a scheme's, or the
/// source's for all its schemes).
fn public_url(file: &mut File, raw: &Option<S<String>>) -> Option<String> {
    let url = raw.as_ref()?;
    match url::Url::parse(url.get_ref()) {
        Ok(u) if u.query().is_none() && matches!(u.scheme(), "http" | "https") => Some(url.get_ref().clone()),
        _ => {
            file.error(
                url.span(),
                "public_url must be the absolute http(s) URL the provider calls, without a query string",
            );
            None
        }
    }
}

fn auth(file: &mut File, source: &raw::Source, secrets: &HashMap<String, Arc<str>>, provider: Provider) -> Vec<Scheme> {
    let Some(list) = &source.auth else {
        file.error(
            source.id.span(),
            format!(
                "source {:?} has no `auth`: list its schemes, or write auth = [{{ scheme = \"none\" }}] to accept anyone",
                source.id.get_ref()
            ),
        );
        return Vec::new();
    };
    if list.get_ref().is_empty() {
        file.error(list.span(), "auth lists no scheme; write [{ scheme = \"none\" }] to accept anyone");
    }
    list.get_ref().iter().filter_map(|raw| scheme(file, raw, secrets, provider)).collect()
}

/// A `{ env = "VAR" }` or `{ file = "path" }` secret (a path relative to the file naming it).
fn resolve_secret(
    file: &mut File,
    name: &str,
    secret: &S<raw::Secret>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Arc<str>> {
    let dir = file.path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let value = match (&secret.get_ref().env, &secret.get_ref().file) {
        (Some(var), None) => env(var).ok_or_else(|| format!("secret {name:?}: environment variable {var} is not set")),
        (None, Some(path)) => std::fs::read_to_string(dir.join(path))
            .map(|v| v.trim_end_matches(['\r', '\n']).to_string())
            .map_err(|e| format!("secret {name:?}: cannot read {path}: {e}")),
        _ => Err(format!("secret {name:?} must be {{ env = \"VAR\" }} or {{ file = \"path\" }}")),
    };
    match value {
        Ok(v) if v.is_empty() => {
            file.error(secret.span(), format!("secret {name:?} is empty"));
            None
        }
        Ok(v) => Some(Arc::from(v)),
        Err(message) => {
            file.error(secret.span(), message);
            None
        }
    }
}

fn portal(file: &mut File, raw: &raw::Portal, base: &Path) -> Portal {
    let mut frame_ancestors = Vec::new();
    for origin in raw.frame_ancestors.iter().flatten() {
        let v = origin.get_ref();
        let parsed = url::Url::parse(v).ok().filter(|u| {
            matches!(u.scheme(), "https" | "http") && u.host().is_some() && u.path() == "/" && !v.ends_with('/')
        });
        if v == "'self'" || parsed.is_some() {
            frame_ancestors.push(v.clone());
        } else {
            file.error(origin.span(), format!("{v:?} is not an origin like \"https://app.example.com\" (or 'self')"));
        }
    }
    let colour = |file: &mut File, value: &Option<S<String>>| {
        let value = value.as_ref()?;
        let v = value.get_ref();
        let hex = v.strip_prefix('#').filter(|h| matches!(h.len(), 3 | 6) && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if hex.is_none() {
            file.error(value.span(), format!("{v:?} is not a colour like \"#1f5fd1\""));
        }
        hex.map(|_| v.clone())
    };
    let accent = colour(file, &raw.accent);
    let background = colour(file, &raw.background);
    let logo = raw.logo.as_ref().and_then(|logo| {
        let path = base.join(logo.get_ref());
        let content_type = match path.extension().and_then(|x| x.to_str()) {
            Some("png") => "image/png",
            Some("svg") => "image/svg+xml",
            Some("jpg" | "jpeg") => "image/jpeg",
            Some("webp") => "image/webp",
            _ => {
                file.error(logo.span(), "the logo must be a .png, .svg, .jpg or .webp file");
                return None;
            }
        };
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() <= 256 * 1024 => Some((Bytes::from(bytes), content_type)),
            Ok(_) => {
                file.error(logo.span(), "the logo is larger than 256 KiB");
                None
            }
            Err(e) => {
                file.error(logo.span(), format!("cannot read the logo {}: {e}", path.display()));
                None
            }
        }
    });
    Portal { frame_ancestors, accent, background, logo }
}

/// 32 random bytes, written as 64 hex digits or in base64.
fn secrets_key(file: &mut File, secret: &S<raw::Secret>, env: &dyn Fn(&str) -> Option<String>) -> Option<SecretsKey> {
    let text = resolve_secret(file, "secrets_key", secret, env)?;
    let text = text.trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).ok()
    } else {
        crate::auth::signatures::base64_decode(text)
    };
    match bytes.and_then(|b| <[u8; 32]>::try_from(b).ok()) {
        Some(key) => Some(SecretsKey(key)),
        None => {
            file.error(
                secret.span(),
                "secrets_key must be 32 random bytes, as 64 hex digits or base64 (e.g. `openssl rand -hex 32`)",
            );
            None
        }
    }
}

/// Validates a tenant of the control plane: `text` is its document written as TOML (see
/// `control::document`), `secrets` its secret values. The same checks and template
/// compiler as a tenant file; errors carry byte offsets into `text`.
pub fn tenant_document(
    text: &str,
    secrets: &HashMap<String, Arc<str>>,
    version: i64,
) -> Result<Tenant, Vec<ConfigError>> {
    let path = Path::new("<api>");
    let mut errors = Vec::new();
    let Some(raw) = parse::<raw::Tenant>(path, text, &mut errors) else { return Err(errors) };
    let mut file = File { path, text, errors: &mut errors };
    if !raw.secrets.is_empty() {
        let span = raw.id.span();
        file.error(span, "secrets are written with PUT /v1/tenants/{tenant}/secrets/{name}, never read from files or the environment");
    }
    let tenant = tenant(&mut file, &raw, secrets, Origin::Api { version });
    if errors.is_empty() { Ok(tenant) } else { Err(errors) }
}

fn secrets(file: &mut File, raw: &raw::Tenant, env: &dyn Fn(&str) -> Option<String>) -> HashMap<String, Arc<str>> {
    let mut secrets = HashMap::new();
    for (name, secret) in &raw.secrets {
        if let Some(value) = resolve_secret(file, name, secret, env) {
            secrets.insert(name.clone(), value);
        }
    }
    secrets
}

fn tenant(file: &mut File, raw: &raw::Tenant, secrets: &HashMap<String, Arc<str>>, origin: Origin) -> Tenant {
    file.id(&raw.id, "tenant");
    let id = raw.id.get_ref().clone();

    let mut sources: Vec<Source> = Vec::with_capacity(raw.sources.len());
    for s in &raw.sources {
        file.id(&s.id, "source");
        if sources.iter().any(|o| o.id == *s.id.get_ref()) {
            file.error(s.id.span(), format!("source {:?} is defined twice", s.id.get_ref()));
        }
        let provider = Provider::parse(s.provider.get_ref()).unwrap_or_else(|| {
            file.error(
                s.provider.span(),
                format!(
                    "unknown provider {:?}; expected one of {}",
                    s.provider.get_ref(),
                    Provider::ALL.map(Provider::name).join(", ")
                ),
            );
            Provider::Generic
        });
        let response = match &s.response {
            Some(r) => fixed_response(file, r),
            // The provider's own "nothing to do" answer, where a JSON one would be an error.
            None => crate::normalize::profile::of(provider).answer.ack.map(|(ct, body)| FixedResponse::of(ct, body)),
        };
        let timezone = match &s.timezone {
            None => jiff::tz::TimeZone::UTC,
            Some(tz) => jiff::tz::TimeZone::get(tz.get_ref()).unwrap_or_else(|_| {
                file.error(
                    tz.span(),
                    format!("unknown time zone {:?}; write an IANA name like \"Asia/Kolkata\"", tz.get_ref()),
                );
                jiff::tz::TimeZone::UTC
            }),
        };
        let dedupe_window = match &s.dedupe_window {
            Some(w) if humantime::parse_duration(w.get_ref()).is_ok_and(|d| d.is_zero()) => None,
            window => Some(file.duration(window, Duration::from_secs(24 * 3600))),
        };
        sources.push(Source {
            id: s.id.get_ref().clone(),
            provider,
            response,
            destinations: Vec::new(),
            timezone,
            dedupe_window,
            auth: auth(file, s, secrets, provider),
            public_url: public_url(file, &s.public_url),
            rate_limit: rate_limit(file, &s.rate_limit),
            responder: None,
            call_key: call_key(file, s),
            sequence: sequence(file, s, provider),
        });
    }

    let mut destinations: Vec<Arc<Destination>> = Vec::with_capacity(raw.destinations.len());
    for (index, d) in raw.destinations.iter().enumerate() {
        file.id(&d.id, "destination");
        if destinations.iter().any(|o| o.id == *d.id.get_ref()) {
            file.error(d.id.span(), format!("destination {:?} is defined twice", d.id.get_ref()));
        }
        match &d.sources {
            None => sources.iter_mut().for_each(|s| s.destinations.push(index)),
            Some(names) => {
                for name in names {
                    match sources.iter_mut().find(|s| s.id == *name.get_ref()) {
                        Some(s) if !s.destinations.contains(&index) => s.destinations.push(index),
                        Some(_) => {}
                        None => file.error(name.span(), format!("no source {:?} in tenant {id:?}", name.get_ref())),
                    }
                }
            }
        }
        destinations.push(Arc::new(destination(file, &id, d, secrets)));
    }
    for (source, raw_source) in sources.iter_mut().zip(&raw.sources) {
        source.responder = responder(file, raw_source, source.provider, &destinations);
        // The responder is answered synchronously; it gets no queued copy unless asked.
        if let Some(r) = &source.responder
            && !raw_source.queue_responder.unwrap_or(false)
        {
            source.destinations.retain(|&i| i != r.destination);
        }
    }
    Tenant { id, rate_limit: rate_limit(file, &raw.rate_limit), sources, destinations, origin }
}

fn responder(
    file: &mut File,
    raw: &raw::Source,
    provider: Provider,
    destinations: &[Arc<Destination>],
) -> Option<Responder> {
    let profile = crate::normalize::profile::of(provider);
    let Some(name) = &raw.respond_with else {
        for (key, present) in [
            ("respond_timeout", raw.respond_timeout.is_some()),
            ("fallback_response", raw.fallback_response.is_some()),
            ("queue_responder", raw.queue_responder.is_some()),
        ] {
            if present {
                file.error(raw.id.span(), format!("`{key}` applies only with `respond_with`"));
            }
        }
        return None;
    };
    let Some(destination) = destinations.iter().position(|d| d.id == *name.get_ref()) else {
        file.error(name.span(), format!("respond_with names no destination of this tenant: {:?}", name.get_ref()));
        return None;
    };
    // The provider's own deadline, less a margin, unless the source says otherwise.
    let timeout = file.duration(&raw.respond_timeout, profile.respond_timeout());
    let fallback = match (&raw.fallback_response, profile.answer.fallback) {
        (Some(fallback), _) => fixed_response(file, fallback)?,
        (None, Some((content_type, body))) => FixedResponse::of(content_type, body),
        (None, None) => {
            file.error(
                name.span(),
                "a source with respond_with needs a fallback_response: what the provider gets when the responder fails",
            );
            return None;
        }
    };
    Some(Responder { destination, timeout, fallback, pass_through: profile.answer.pass_through.to_vec() })
}

/// A list of HTTP statuses, each checked.
/// `on_status = { 401 = "dead", 410 = "pause" }`: statuses 100–599 that are not success
/// codes, each to `retry`, `dead` or `pause`. (TOML keys carry no position here: an error
/// points at the key's value.)
fn on_status(file: &mut File, raw: &raw::Destination, success: &[u16]) -> OnStatus {
    let Some(table) = &raw.on_status else { return OnStatus::default() };
    let mut overrides = Vec::new();
    for (key, value) in table {
        let status = match key.parse::<u16>() {
            Ok(s) if (100..600).contains(&s) && !success.contains(&s) => s,
            Ok(s) if success.contains(&s) => {
                file.error(value.span(), format!("on_status: {s} is one of success_codes; it cannot also fail"));
                continue;
            }
            _ => {
                file.error(value.span(), format!("on_status: {key:?} is not an HTTP status (100 to 599)"));
                continue;
            }
        };
        match StatusAction::parse(value.get_ref()) {
            Some(action) => overrides.push((status, action)),
            None => file.error(
                value.span(),
                format!("on_status: {:?} is not an action; write \"retry\", \"dead\" or \"pause\"", value.get_ref()),
            ),
        }
    }
    OnStatus::new(overrides)
}

fn status_list(file: &mut File, raw: &Option<S<Vec<S<u16>>>>) -> Option<Vec<u16>> {
    let codes = raw.as_ref()?;
    Some(
        codes
            .get_ref()
            .iter()
            .filter_map(|c| {
                let v = *c.get_ref();
                if (100..600).contains(&v) {
                    Some(v)
                } else {
                    file.error(c.span(), format!("{v} is not an HTTP status (100 to 599)"));
                    None
                }
            })
            .collect(),
    )
}

fn fixed_response(file: &mut File, raw: &S<raw::Response>) -> Option<FixedResponse> {
    let r = raw.get_ref();
    let status = match StatusCode::from_u16(r.status.unwrap_or(200)) {
        Ok(s) if (200..600).contains(&s.as_u16()) => s,
        _ => {
            file.error(raw.span(), "response status must be between 200 and 599");
            return None;
        }
    };
    let content_type = r.content_type.as_deref().unwrap_or("application/json");
    let Ok(content_type) = HeaderValue::from_str(content_type) else {
        file.error(raw.span(), "response content_type is not a valid header value");
        return None;
    };
    let body = Bytes::from(r.body.clone().unwrap_or_default());
    Some(FixedResponse { status, content_type, body })
}

fn template(file: &mut File, text: &S<String>, kind: Kind, secrets: &HashMap<String, Arc<str>>) -> Option<Template> {
    Template::compile(text.get_ref(), kind, &|name| secrets.get(name).cloned())
        .map_err(|e| file.template_error(text.span(), e))
        .ok()
}

/// Headers Switchboard sets itself on every delivery.
const MANAGED_HEADERS: [&str; 8] = [
    "content-type",
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "webhook-id",
    "webhook-timestamp",
    "x-switchboard-attempt",
];

fn request(
    file: &mut File,
    raw: &raw::Destination,
    method: &Method,
    secrets: &HashMap<String, Arc<str>>,
) -> RequestTemplate {
    let fallback = || Template::compile("http://invalid.invalid/", Kind::Url, &|_| None).expect("static template");
    let url = template(file, &raw.url, Kind::Url, secrets).unwrap_or_else(fallback);
    let mut headers = Vec::new();
    for (name, value) in raw.headers.iter().flatten() {
        let Ok(header) = http::HeaderName::from_bytes(name.as_bytes()) else {
            file.error(value.span(), format!("{name:?} is not a valid header name"));
            continue;
        };
        if MANAGED_HEADERS.contains(&header.as_str()) {
            file.error(
                value.span(),
                format!("header {name:?} is set by Switchboard (use content_type for a templated body's type)"),
            );
            continue;
        }
        if let Some(t) = template(file, value, Kind::Header, secrets) {
            headers.push((header, t));
        }
    }
    let content_type = match &raw.content_type {
        None => HeaderValue::from_static("application/json"),
        Some(ct) => HeaderValue::from_str(ct.get_ref()).unwrap_or_else(|_| {
            file.error(ct.span(), "content_type is not a valid header value");
            HeaderValue::from_static("application/json")
        }),
    };
    let body = match (&raw.body, &raw.form) {
        (Some(body), Some(_)) => {
            file.error(body.span(), "a destination has `body` or `form`, not both");
            BodyTemplate::Original
        }
        (Some(body), None) => match template(file, body, Kind::JsonBody, secrets) {
            Some(template) => BodyTemplate::Json { template, content_type },
            None => BodyTemplate::Original,
        },
        (None, Some(form)) => BodyTemplate::Form(
            form.get_ref()
                .iter()
                .filter_map(|(name, value)| Some((name.clone(), template(file, value, Kind::FormValue, secrets)?)))
                .collect(),
        ),
        (None, None) => {
            if let Some(ct) = &raw.content_type {
                file.error(ct.span(), "content_type applies to a templated `body`; the original body keeps its own");
            }
            BodyTemplate::Original
        }
    };
    let body_span = raw.body.as_ref().map(|b| b.span()).or(raw.form.as_ref().map(|f| f.span()));
    if *method == Method::GET
        && let Some(span) = body_span
    {
        file.error(span, "a GET request carries no body; put the data in the url template");
    }
    RequestTemplate::new(url, headers, body)
}

fn when(file: &mut File, raw: &raw::Destination) -> When {
    let mut when = Vec::new();
    for (name, values) in raw.when.iter().flatten() {
        let Some(field) = Field::parse(name) else {
            file.error(values.span(), format!("`when` names unknown field {name:?}"));
            continue;
        };
        if values.get_ref().is_empty() {
            file.error(values.span(), format!("`when.{name}` lists no values, so nothing would match"));
        }
        when.push((field, values.get_ref().iter().map(|v| v.get_ref().clone()).collect()));
    }
    When(when)
}

fn signing_keys(file: &mut File, raw: &raw::Destination, secrets: &HashMap<String, Arc<str>>) -> Vec<Vec<u8>> {
    let Some(names) = &raw.signing_secret else {
        return Vec::new();
    };
    named_secrets(file, names, secrets)
        .iter()
        .filter_map(|secret| {
            let key = crate::auth::signatures::standard_key(secret);
            if key.is_none() {
                file.error(names.span(), "a signing secret is whsec_ followed by base64");
            }
            key
        })
        .collect()
}

fn destination(
    file: &mut File,
    tenant: &str,
    raw: &raw::Destination,
    secrets: &HashMap<String, Arc<str>>,
) -> Destination {
    let method = match raw.method.as_ref().map(|m| (m, m.get_ref().to_ascii_uppercase())) {
        None => Method::POST,
        Some((_, m)) if m == "POST" => Method::POST,
        Some((_, m)) if m == "PUT" => Method::PUT,
        Some((_, m)) if m == "GET" => Method::GET,
        Some((m, _)) => {
            file.error(m.span(), format!("method must be GET, POST or PUT, not {:?}", m.get_ref()));
            Method::POST
        }
    };
    let success_codes = match status_list(file, &raw.success_codes) {
        None => vec![200, 202],
        Some(codes) if codes.is_empty() => {
            let span = raw.success_codes.as_ref().map_or(raw.id.span(), |c| c.span());
            file.error(span, "success_codes must name at least one status");
            vec![200, 202]
        }
        Some(codes) => codes,
    };
    let request = request(file, raw, &method, secrets);
    let when = when(file, raw);
    let defaults = RetryPolicy::default();
    let retry = match &raw.retry {
        None => defaults,
        Some(r) => {
            let policy = RetryPolicy {
                max_attempts: file.ranged(&r.max_attempts, defaults.max_attempts.into(), 1..1001, "max_attempts")
                    as u32,
                initial_backoff: file.duration(&r.initial_backoff, defaults.initial_backoff),
                max_backoff: file.duration(&r.max_backoff, defaults.max_backoff),
                deadline: file.duration(&r.deadline, defaults.deadline),
            };
            if policy.initial_backoff > policy.max_backoff {
                let span = r.initial_backoff.as_ref().or(r.max_backoff.as_ref()).map_or(raw.id.span(), |s| s.span());
                file.error(span, "initial_backoff must not exceed max_backoff");
            }
            policy
        }
    };
    let circuit_breaker = circuit_breaker(file, raw);
    let on_status = on_status(file, raw, &success_codes);
    let calls = call_rules(file, raw);
    Destination {
        tenant: tenant.to_string(),
        id: raw.id.get_ref().clone(),
        request,
        method,
        when,
        rate_limit: rate_limit(file, &raw.rate_limit),
        signing_keys: signing_keys(file, raw, secrets),
        pass_through_codes: status_list(file, &raw.pass_through_codes).unwrap_or_default(),
        max_response_bytes: file.ranged(&raw.max_response_bytes, 64 * 1024, 1..(16 << 20) + 1, "max_response_bytes")
            as usize,
        success_codes,
        on_status,
        timeout: file.duration(&raw.timeout, Duration::from_secs(10)),
        max_in_flight: file.ranged(&raw.max_in_flight, 64, 1..10_001, "max_in_flight") as usize,
        retry,
        circuit_breaker,
        calls,
    }
}

/// `ordering`, `supersede` and `live_ttl` of a destination.
fn call_rules(file: &mut File, raw: &raw::Destination) -> CallRules {
    let ordered = match raw.ordering.as_ref().map(|o| (o, o.get_ref().as_str())) {
        None | Some((_, "none")) => false,
        Some((_, "per_call")) => true,
        Some((o, other)) => {
            file.error(o.span(), format!("ordering must be \"none\" or \"per_call\", not {other:?}"));
            false
        }
    };
    CallRules {
        ordered,
        supersede: raw.supersede.unwrap_or(false),
        live_ttl: raw.live_ttl.as_ref().map(|_| file.duration(&raw.live_ttl, Duration::from_secs(120))),
    }
}

/// A payload path written `payload.a.b`: its segments, or an error at `span`.
fn payload_path(file: &mut File, value: &S<String>, what: &str) -> Option<Vec<String>> {
    let path: Vec<String> = value.get_ref().strip_prefix("payload.")?.split('.').map(str::to_string).collect();
    if path.iter().any(String::is_empty) {
        file.error(value.span(), format!("{what}: {:?} has an empty path segment", value.get_ref()));
        return None;
    }
    Some(path)
}

fn call_key(file: &mut File, raw: &raw::Source) -> CallKey {
    let Some(value) = &raw.call_key else { return CallKey::Field(Field::Id) };
    if value.get_ref().starts_with("payload.") {
        return payload_path(file, value, "call_key").map_or(CallKey::Field(Field::Id), CallKey::Payload);
    }
    match Field::parse(value.get_ref()) {
        Some(field) if !field.is_time() => CallKey::Field(field),
        _ => {
            file.error(
                value.span(),
                format!(
                    "call_key {:?} is not a normalized field; write e.g. \"session_id\" or \"payload.CallSid\"",
                    value.get_ref()
                ),
            );
            CallKey::Field(Field::Id)
        }
    }
}

/// The most an early event may wait for the ones before it: a provider retrying a lost
/// callback takes longer than this, and an ordered call must not stall behind it.
const MAX_REORDER_WINDOW: Duration = Duration::from_secs(60);

fn sequence(file: &mut File, raw: &raw::Source, provider: Provider) -> Option<SequenceOrder> {
    let by_sequence = match raw.order_by.as_ref().map(|o| (o, o.get_ref().as_str())) {
        None | Some((_, "commit")) => false,
        Some((_, "provider_sequence")) => true,
        Some((o, other)) => {
            file.error(o.span(), format!("order_by must be \"commit\" or \"provider_sequence\", not {other:?}"));
            false
        }
    };
    if !by_sequence {
        for (key, value) in [("sequence", &raw.sequence), ("reorder_window", &raw.reorder_window)] {
            if let Some(value) = value {
                file.error(value.span(), format!("`{key}` applies only with order_by = \"provider_sequence\""));
            }
        }
        return None;
    }
    let window = file.duration(&raw.reorder_window, Duration::from_secs(2));
    if window > MAX_REORDER_WINDOW {
        let span = raw.reorder_window.as_ref().map_or(raw.id.span(), |w| w.span());
        file.error(span, "reorder_window must be at most 1m");
    }
    let window = window.min(MAX_REORDER_WINDOW);
    let Some(field) = &raw.sequence else {
        if crate::normalize::profile::of(provider).sequence.is_some() {
            return Some(SequenceOrder { path: None, window });
        }
        let span = raw.order_by.as_ref().map_or(raw.id.span(), |o| o.span());
        file.error(
            span,
            "order_by = \"provider_sequence\" needs `sequence`: the payload field with the provider's sequence number, e.g. \"payload.SequenceNumber\"",
        );
        return None;
    };
    let Some(path) = payload_path(file, field, "sequence") else {
        if !field.get_ref().starts_with("payload.") {
            file.error(field.span(), format!("sequence must name a payload field: \"payload.{}\"", field.get_ref()));
        }
        return None;
    };
    Some(SequenceOrder { path: Some(path), window })
}

fn circuit_breaker(file: &mut File, raw: &raw::Destination) -> Option<CircuitBreaker> {
    let defaults = CircuitBreaker::default();
    let Some(r) = &raw.circuit_breaker else { return Some(defaults) };
    let failures = file.ranged(&r.failures, defaults.failures.get().into(), 0..1001, "circuit_breaker.failures");
    let settings = CircuitBreaker {
        failures: NonZeroU32::new(failures as u32)?,
        cooldown: file.duration(&r.cooldown, defaults.cooldown),
        max_cooldown: file.duration(&r.max_cooldown, defaults.max_cooldown),
    };
    if settings.cooldown > settings.max_cooldown {
        let span = r.cooldown.as_ref().or(r.max_cooldown.as_ref()).map_or(raw.id.span(), |s| s.span());
        file.error(span, "circuit_breaker.cooldown must not exceed max_cooldown");
    }
    Some(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    const MAIN: &str = "[server]\nlisten = \"127.0.0.1:0\"\n";

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\ncdé x", 0), (1, 1));
        assert_eq!(line_column("ab\ncdé x", 3), (2, 1));
        assert_eq!(line_column("ab\ncdé x", 8), (2, 5));
    }

    #[test]
    fn loads_a_minimal_config_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let main = write(dir.path(), "switchboard.toml", MAIN);
        write(
            dir.path(),
            "tenants/acme.toml",
            "id = \"acme\"\n[[source]]\nid = \"telecmi\"\nprovider = \"telecmi\"\nauth = [{ scheme = \"none\" }]\n[[destination]]\nid = \"crm\"\nurl = \"http://127.0.0.1:9/x\"\n",
        );
        let config = load(&main).unwrap();
        let acme = &config.tenants["acme"];
        let crm = &acme.destinations[0];
        assert_eq!(crm.success_codes, [200, 202]);
        assert_eq!(crm.method, Method::POST);
        assert_eq!(acme.source("telecmi").unwrap().destinations, [0]);
        assert_eq!(config.server.max_body_bytes, 262_144);
        let Backend::Sqlite { path } = &config.store.backend else { panic!("sqlite by default") };
        assert_eq!(path, &dir.path().join("data/switchboard.db"));
    }

    #[test]
    fn metrics_detail_is_one_of_three_words_and_destination_by_default() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tenants")).unwrap();
        let main = write(dir.path(), "switchboard.toml", MAIN);
        assert_eq!(load(&main).unwrap().metrics_detail, MetricsDetail::Destination);
        write(dir.path(), "switchboard.toml", &format!("{MAIN}[metrics]\ndetail = \"tenant\"\n"));
        assert_eq!(load(&main).unwrap().metrics_detail, MetricsDetail::Tenant);
        write(dir.path(), "switchboard.toml", &format!("{MAIN}[metrics]\ndetail = \"gateway\"\n"));
        assert_eq!(load(&main).unwrap().metrics_detail, MetricsDetail::Gateway);
        write(dir.path(), "switchboard.toml", &format!("{MAIN}[metrics]\ndetail = \"source\"\n"));
        let errors = load(&main).unwrap_err().to_string();
        assert!(
            errors.contains(":4:10: detail must be \"destination\", \"tenant\" or \"gateway\", not \"source\""),
            "{errors}"
        );
    }

    #[test]
    fn a_postgres_store_takes_its_password_from_a_secret_and_refuses_sqlite_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = "[store]\nurl = \"postgres://gw@db.internal:6432/queue?sslmode=require\"\npassword = { env = \"DB_PASSWORD\" }\npool_size = 4\n";
        let main = write(dir.path(), "switchboard.toml", &format!("{MAIN}{store}"));
        std::fs::create_dir_all(dir.path().join("tenants")).unwrap();
        let env = |name: &str| (name == "DB_PASSWORD").then(|| "s3cret".to_string());
        let config = load_with_env(&main, &env).unwrap();
        let Backend::Postgres { config: pg, pool_size } = &config.store.backend else { panic!("postgres") };
        assert_eq!((pg.get_user(), pg.get_dbname(), pg.get_ports()), (Some("gw"), Some("queue"), &[6432][..]));
        assert_eq!(pg.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(*pool_size, 4);
        assert!(!format!("{pg:?}").contains("s3cret"), "the password never reaches a log line");

        let bad = "[store]\nurl = \"postgres://gw:inline@db/queue\"\npassword = { env = \"DB_PASSWORD\" }\nsynchronous = \"normal\"\n";
        write(dir.path(), "switchboard.toml", &format!("{MAIN}{bad}"));
        let errors = load_with_env(&main, &env).unwrap_err().to_string();
        assert!(errors.contains(":5:12: the password is given twice"), "{errors}");
        assert!(errors.contains(":6:15: synchronous applies to a sqlite:// store only"), "{errors}");
        write(dir.path(), "switchboard.toml", &format!("{MAIN}[store]\nurl = \"mysql://db/q\"\npool_size = 3\n"));
        let errors = load_with_env(&main, &env).unwrap_err().to_string();
        assert!(errors.contains(":4:7: unsupported store url"), "{errors}");
        assert!(errors.contains(":5:13: pool_size applies to a postgres:// store only"), "{errors}");
    }

    #[test]
    fn collects_every_error_with_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let main = write(dir.path(), "switchboard.toml", MAIN);
        let tenant = write(
            dir.path(),
            "tenants/acme.toml",
            concat!(
                "id = \"acme\"\n",
                "[[source]]\nid = \"telecmi\"\nprovider = \"telekom\"\nauth = [{ scheme = \"none\" }]\n",
                "[[destination]]\nid = \"crm\"\nurl = \"ftp://x\"\nsources = [\"nope\"]\n",
                "timeout = \"ten seconds\"\nretry = { initial_backoff = \"1m\", max_backoff = \"1s\" }\n",
            ),
        );
        let errors = load(&main).unwrap_err().0;
        let shown: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let at = |line: usize, col: usize, text: &str| {
            let prefix = format!("{}:{line}:{col}: ", tenant.display());
            assert!(
                shown.iter().any(|s| s.starts_with(&prefix) && s.contains(text)),
                "no error at {line}:{col} containing {text:?} in {shown:#?}"
            );
        };
        at(4, 12, "unknown provider \"telekom\"");
        at(9, 12, "no source \"nope\"");
        at(8, 8, "http:// or https://");
        at(10, 11, "invalid duration");
        at(11, 29, "initial_backoff must not exceed max_backoff");
        assert_eq!(errors.len(), 5, "{shown:#?}");
    }

    #[test]
    fn call_rules_load_and_their_mistakes_point_at_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let main = write(dir.path(), "switchboard.toml", MAIN);
        let tenant = |source: &str, destination: &str| {
            format!(
                "id = \"acme\"\n[[source]]\nid = \"s\"\nprovider = \"generic\"\nauth = [{{ scheme = \"none\" }}]\n{source}\n\
                 [[destination]]\nid = \"crm\"\nurl = \"https://crm.example/\"\n{destination}\n"
            )
        };
        write(
            dir.path(),
            "tenants/acme.toml",
            &tenant(
                "call_key = \"payload.data.call_sid\"\norder_by = \"provider_sequence\"\nsequence = \"payload.SequenceNumber\"\nreorder_window = \"3s\"",
                "ordering = \"per_call\"\nsupersede = true\nlive_ttl = \"2m\"",
            ),
        );
        let config = load(&main).unwrap();
        let acme = &config.tenants["acme"];
        let calls = acme.destinations[0].calls;
        assert_eq!(calls, CallRules { ordered: true, supersede: true, live_ttl: Some(Duration::from_secs(120)) });
        let source = acme.source("s").unwrap();
        assert_eq!(source.call_key, CallKey::Payload(vec!["data".into(), "call_sid".into()]));
        let sequence = source.sequence.as_ref().unwrap();
        assert_eq!(
            (sequence.path.as_deref(), sequence.window),
            (Some(&["SequenceNumber".to_string()][..]), Duration::from_secs(3))
        );

        // Defaults: the call id, arrival order, nothing by call.
        write(dir.path(), "tenants/acme.toml", &tenant("", ""));
        let config = load(&main).unwrap();
        let acme = &config.tenants["acme"];
        assert!(!acme.destinations[0].calls.by_call());
        assert_eq!(acme.source("s").unwrap().call_key, CallKey::Field(Field::Id));
        assert!(acme.source("s").unwrap().sequence.is_none());

        write(
            dir.path(),
            "tenants/acme.toml",
            &tenant(
                "call_key = \"started_at\"\norder_by = \"provider_sequence\"\nreorder_window = \"5m\"",
                "ordering = \"fifo\"\nlive_ttl = \"soon\"",
            ),
        );
        let errors = load(&main).unwrap_err().to_string();
        for expected in [
            "acme.toml:6:12: call_key \"started_at\" is not a normalized field",
            "acme.toml:7:12: order_by = \"provider_sequence\" needs `sequence`",
            "acme.toml:12:12: ordering must be \"none\" or \"per_call\", not \"fifo\"",
            "acme.toml:13:12: invalid duration \"soon\"",
        ] {
            assert!(errors.contains(expected), "{expected}\n{errors}");
        }
        write(
            dir.path(),
            "tenants/acme.toml",
            &tenant("order_by = \"provider_sequence\"\nsequence = \"SequenceNumber\"\nreorder_window = \"5m\"", ""),
        );
        let errors = load(&main).unwrap_err().to_string();
        assert!(
            errors.contains("acme.toml:7:12: sequence must name a payload field: \"payload.SequenceNumber\""),
            "{errors}"
        );
        assert!(errors.contains("acme.toml:8:18: reorder_window must be at most 1m"), "{errors}");
        write(dir.path(), "tenants/acme.toml", &tenant("reorder_window = \"2s\"", ""));
        let errors = load(&main).unwrap_err().to_string();
        assert!(errors.contains("acme.toml:6:18: `reorder_window` applies only with order_by"), "{errors}");
    }

    #[test]
    fn provider_profiles_give_defaults_and_refuse_what_the_provider_cannot_do() {
        let dir = tempfile::tempdir().unwrap();
        let main = write(dir.path(), "switchboard.toml", MAIN);
        write(
            dir.path(),
            "tenants/acme.toml",
            "id = \"acme\"\n[secrets]\nt = { env = \"PATH\" }\n\
             [[source]]\nid = \"voice\"\nprovider = \"twilio\"\npublic_url = \"https://hooks.example.com/v1/hooks/acme/voice\"\n\
             auth = [{ scheme = \"provider\", secret = \"t\" }]\norder_by = \"provider_sequence\"\nrespond_with = \"ivr\"\n\
             [[source]]\nid = \"vonage\"\nprovider = \"vonage\"\nauth = [{ scheme = \"provider\", secret = \"t\" }]\n\
             [[destination]]\nid = \"ivr\"\nurl = \"https://ivr.example/\"\n",
        );
        let config = load(&main).unwrap();
        let acme = &config.tenants["acme"];
        let voice = acme.source("voice").unwrap();
        assert!(matches!(voice.auth[..], [Scheme::Twilio { public_url: None, .. }]), "{:?}", voice.auth);
        assert_eq!(voice.public_url.as_deref(), Some("https://hooks.example.com/v1/hooks/acme/voice"));
        // Twilio numbers its callbacks: no `sequence` needed.
        assert_eq!(voice.sequence.as_ref().map(|s| s.path.is_none()), Some(true));
        // Twilio waits 15 s: the responder gets 12 s, and empty TwiML when it fails.
        let responder = voice.responder.as_ref().unwrap();
        assert_eq!(responder.timeout, Duration::from_secs(12));
        assert_eq!(responder.fallback.body, "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>");
        assert_eq!(voice.response.as_ref().unwrap().content_type, "application/xml");
        assert!(matches!(acme.source("vonage").unwrap().auth[..], [Scheme::VonageJwt { .. }]));

        write(
            dir.path(),
            "tenants/acme.toml",
            "id = \"acme\"\n[[source]]\nid = \"ivr\"\nprovider = \"exotel\"\nauth = [{ scheme = \"provider\" }]\n\
             order_by = \"provider_sequence\"\npublic_url = \"https://x.example/?a=1\"\n\
             [[source]]\nid = \"v\"\nprovider = \"vonage\"\nauth = [{ scheme = \"none\" }]\nrespond_with = \"d\"\n\
             [[destination]]\nid = \"d\"\nurl = \"https://ivr.example/\"\n",
        );
        let errors = load(&main).unwrap_err().to_string();
        assert!(errors.contains("acme.toml:5:20: provider \"exotel\" does not sign its callbacks"), "{errors}");
        assert!(errors.contains("acme.toml:6:12: order_by = \"provider_sequence\" needs `sequence`"), "{errors}");
        assert!(errors.contains("acme.toml:7:14: public_url must be the absolute http(s) URL"), "{errors}");
        // Vonage documents no do-nothing NCCO: its responder needs a fallback written out.
        assert!(errors.contains("acme.toml:12:16: a source with respond_with needs a fallback_response"), "{errors}");
    }

    #[test]
    fn on_status_overrides_the_defaults_and_refuses_what_cannot_be() {
        let dir = tempfile::tempdir().unwrap();
        let main = write(dir.path(), "switchboard.toml", MAIN);
        let tenant = |on_status: &str| {
            format!(
                "id = \"acme\"\n[[source]]\nid = \"s\"\nprovider = \"generic\"\nauth = [{{ scheme = \"none\" }}]\n\
                 [[destination]]\nid = \"crm\"\nurl = \"https://crm.example/\"\n{on_status}\n"
            )
        };
        write(dir.path(), "tenants/acme.toml", &tenant("on_status = { 401 = \"dead\", 410 = \"retry\" }"));
        let config = load(&main).unwrap();
        let on = &config.tenants["acme"].destinations[0].on_status;
        assert_eq!(on.action(401), StatusAction::Dead);
        assert_eq!(on.action(410), StatusAction::Retry, "an override wins over the default");
        assert_eq!(on.action(422), StatusAction::Dead, "defaults stay for the rest");
        assert_eq!(on.action(404), StatusAction::Retry);
        assert_eq!(on.action(503), StatusAction::Retry);
        assert_eq!(OnStatus::default().action(410), StatusAction::Pause);

        write(
            dir.path(),
            "tenants/acme.toml",
            &tenant("on_status = { 200 = \"dead\", 999 = \"dead\", x = \"dead\", 404 = \"ignore\" }"),
        );
        let errors = load(&main).unwrap_err().to_string();
        assert!(errors.contains("acme.toml:9:21: on_status: 200 is one of success_codes"), "{errors}");
        assert!(errors.contains(":9:35: on_status: \"999\" is not an HTTP status"), "{errors}");
        assert!(errors.contains(":9:47: on_status: \"x\" is not an HTTP status"), "{errors}");
        assert!(errors.contains(":9:61: on_status: \"ignore\" is not an action"), "{errors}");
    }

    #[test]
    fn circuit_breaker_defaults_off_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let main = write(dir.path(), "switchboard.toml", MAIN);
        let tenant = |breakers: &[&str]| {
            let mut text = String::from(
                "id = \"acme\"\n[[source]]\nid = \"s\"\nprovider = \"generic\"\nauth = [{ scheme = \"none\" }]\n",
            );
            for (i, breaker) in breakers.iter().enumerate() {
                text += &format!("[[destination]]\nid = \"d{i}\"\nurl = \"https://x/\"\n{breaker}\n");
            }
            write(dir.path(), "tenants/acme.toml", &text)
        };
        tenant(&["", "circuit_breaker = { failures = 0 }", "circuit_breaker = { failures = 2, cooldown = \"1s\" }"]);
        let config = load(&main).unwrap();
        let d = &config.tenants["acme"].destinations;
        assert_eq!(d[0].circuit_breaker, Some(CircuitBreaker::default()));
        assert_eq!(d[1].circuit_breaker, None);
        let custom = d[2].circuit_breaker.unwrap();
        assert_eq!(
            (custom.failures.get(), custom.cooldown, custom.max_cooldown),
            (2, Duration::from_secs(1), Duration::from_secs(60))
        );

        let path = tenant(&[
            "circuit_breaker = { cooldown = \"2m\", max_cooldown = \"1m\" }",
            "circuit_breaker = { failures = 5000 }",
        ]);
        let errors = load(&main).unwrap_err().to_string();
        let at = |line_col: &str, text: &str| {
            let expected = format!("{}:{line_col}: {text}", path.display());
            assert!(errors.contains(&expected), "no {expected:?} in {errors}");
        };
        at("9:32", "circuit_breaker.cooldown must not exceed max_cooldown");
        at("13:32", "circuit_breaker.failures must be between 0 and 1000");
    }

    #[test]
    fn unknown_keys_are_errors_with_position() {
        let dir = tempfile::tempdir().unwrap();
        let main = write(dir.path(), "switchboard.toml", "[server]\nlisten = \"127.0.0.1:0\"\nlisen = 1\n");
        let errors = load(&main).unwrap_err().0;
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].position, Some((3, 1)));
        assert!(errors[0].message.contains("lisen"), "{}", errors[0]);
    }

    #[test]
    fn duplicate_tenants_and_destinations_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let main = write(dir.path(), "switchboard.toml", MAIN);
        let body = "id = \"acme\"\n[[destination]]\nid = \"a\"\nurl = \"http://x/\"\n[[destination]]\nid = \"a\"\nurl = \"http://x/\"\n";
        write(dir.path(), "tenants/a.toml", body);
        write(dir.path(), "tenants/b.toml", body);
        let shown = load(&main).unwrap_err().to_string();
        assert!(shown.contains("a.toml:6:6: destination \"a\" is defined twice"), "{shown}");
        assert!(shown.contains("b.toml:1:6: tenant \"acme\" is already defined"), "{shown}");
    }
}
