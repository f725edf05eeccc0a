//! Fan-out: which destinations of the tenant an event becomes deliveries for. The source's
//! list was resolved when the config loaded, so this is a lookup, not a search.

use crate::config::{Source, Tenant};

/// The ids of the destinations `source`'s events are delivered to, one delivery each.
pub fn destinations(tenant: &Tenant, source: &Source) -> Vec<String> {
    source
        .destinations
        .iter()
        .map(|&i| tenant.destinations[i].id.clone())
        .collect()
}
