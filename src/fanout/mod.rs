//! Fan-out: which of the tenant's destinations an event becomes deliveries for. A source's
//! destinations were resolved when the config loaded; each destination's `when` filter is
//! then checked against the normalized event.

use crate::config::{Source, Tenant};
use crate::normalize::event::FieldValue;
use crate::normalize::{CallEvent, Field};

/// A destination's declarative filter: every listed field must equal one of its values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct When(pub Vec<(Field, Vec<String>)>);

impl When {
    pub fn matches(&self, event: &CallEvent) -> bool {
        self.0.iter().all(|(field, allowed)| match event.get(*field) {
            FieldValue::Missing => false,
            FieldValue::Text(t) => allowed.iter().any(|a| a == t),
            FieldValue::Int(n) => allowed.iter().any(|a| a.parse() == Ok(n)),
        })
    }
}

/// The ids of the destinations `source`'s event is delivered to, one delivery each.
pub fn destinations(tenant: &Tenant, source: &Source, event: &CallEvent) -> Vec<String> {
    source
        .destinations
        .iter()
        .map(|&i| &tenant.destinations[i])
        .filter(|d| d.when.matches(event))
        .map(|d| d.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::Status;

    #[test]
    fn when_needs_every_field_to_match_one_value() {
        let when =
            When(vec![(Field::Status, vec!["completed".into(), "busy".into()]), (Field::Event, vec!["report".into()])]);
        let mut event = CallEvent { status: Status::Busy, event: Some("report".into()), ..CallEvent::default() };
        assert!(when.matches(&event));
        event.status = Status::Queued;
        assert!(!when.matches(&event));
        event.status = Status::Completed;
        event.event = None;
        assert!(!when.matches(&event));
        assert!(When::default().matches(&event));
        let by_number = When(vec![(Field::Duration, vec!["23".into()])]);
        event.duration = Some(23);
        assert!(by_number.matches(&event));
    }
}
