//! The web console: a page and two assets, embedded in the binary and served by the admin
//! listener at `/`. No build step and nothing fetched from anywhere else: plain ES modules
//! against the same admin API the command line uses, with whatever token the person signs
//! in with (the admin token, or a tenant key that sees its own tenant only). The token is
//! held in the page's memory and sent as a bearer header, never in a cookie: there is no
//! ambient credential for another site to ride on.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::config::Portal;
use crate::server::Body;

const INDEX: &str = include_str!("console/index.html");
const APP: &str = include_str!("console/app.js");
const STYLE: &str = include_str!("console/app.css");

/// Scripts and styles from this origin only (none inline), API calls to this origin only,
/// no plugins, no forms posting elsewhere; framed by no one, or (the portal) by the origins
/// the deployment names.
fn content_security_policy(frame_ancestors: &[String]) -> String {
    let ancestors = if frame_ancestors.is_empty() { "'none'".to_string() } else { frame_ancestors.join(" ") };
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors {ancestors}"
    )
}

/// The portal's colours, as CSS custom properties the stylesheet reads.
fn theme(portal: &Portal) -> String {
    let mut css = String::from(":root {");
    if let Some(accent) = &portal.accent {
        css.push_str(&format!(" --accent: {accent};"));
    }
    if let Some(background) = &portal.background {
        css.push_str(&format!(" --bg: {background};"));
    }
    css.push_str(" }\n");
    css
}

/// The console's files, by path: `/` for operators, `/portal` for a tenant's embedded view.
pub fn asset(path: &str, portal: &Portal) -> Option<Response<Body>> {
    let framed = path == "/portal" && !portal.frame_ancestors.is_empty();
    let (body, content_type): (Bytes, &'static str) = match path {
        "/" | "/index.html" | "/portal" => (Bytes::from_static(INDEX.as_bytes()), "text/html; charset=utf-8"),
        "/assets/app.js" => (Bytes::from_static(APP.as_bytes()), "text/javascript; charset=utf-8"),
        "/assets/app.css" => (Bytes::from_static(STYLE.as_bytes()), "text/css; charset=utf-8"),
        "/assets/theme.css" => (Bytes::from(theme(portal)), "text/css; charset=utf-8"),
        "/assets/logo" => portal.logo.clone()?,
        _ => return None,
    };
    let mut response = Response::new(crate::server::full(body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let policy = content_security_policy(if path == "/portal" { &portal.frame_ancestors } else { &[] });
    if let Ok(policy) = HeaderValue::from_str(&policy) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if !framed {
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(response)
}
