//! Fan-out: which of the tenant's destinations an event becomes deliveries for. A source's
//! destinations were resolved when the config loaded; each destination's `when` filter is
//! then checked against the normalized event.

use serde_json::Value;

use crate::config::{CallKey, Source, Tenant};
use crate::normalize::event::FieldValue;
use crate::normalize::{CallEvent, Field, Payload};
use crate::store::{CallPlace, Target};

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

/// The destinations `source`'s event is delivered to, one delivery each.
pub fn destinations(tenant: &Tenant, source: &Source, event: &CallEvent) -> Vec<Target> {
    source
        .destinations
        .iter()
        .map(|&i| &tenant.destinations[i])
        .filter(|d| d.when.matches(event))
        .map(|d| Target { destination: d.id.clone(), by_call: d.calls.by_call(), lease: None })
        .collect()
}

/// The event's call and place in it, for destinations that go by call: the call's key (the
/// source's `call_key`), the status's life-cycle rank, and the provider's sequence when the
/// source orders by it. `None` when the event names no call: it is then delivered as if its
/// destination did not go by call.
pub fn call_place(source: &Source, payload: &Payload, event: &CallEvent, received_at: i64) -> Option<CallPlace> {
    let key = match &source.call_key {
        CallKey::Field(field) => match event.get(*field) {
            FieldValue::Missing => return None,
            FieldValue::Text(t) => t.to_string(),
            FieldValue::Int(n) => n.to_string(),
        },
        CallKey::Payload(path) => match payload.lookup(path)? {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        },
    };
    if key.is_empty() {
        return None;
    }
    let sequence = source.sequence.as_ref().and_then(|order| {
        let n = match &order.path {
            None => event.sequence?,
            Some(path) => match payload.lookup(path)? {
                Value::Number(n) => n.as_i64()?,
                Value::String(s) => s.trim().parse().ok()?,
                _ => return None,
            },
        };
        Some((n, received_at.saturating_add(order.window.as_millis() as i64)))
    });
    Some(CallPlace { key, rank: event.status.rank(), sequence })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::Status;

    #[test]
    fn the_call_place_comes_from_the_sources_key_and_sequence() {
        use crate::config::{CallKey, SequenceOrder, Source};
        let mut payload = Payload::default();
        payload.merge_json(br#"{"data": {"sid": "CA1", "seq": "7"}, "n": 3}"#).unwrap();
        let event = CallEvent { id: Some("leg-1".into()), status: Status::Ringing, ..CallEvent::default() };
        let mut source = Source {
            id: "s".into(),
            provider: crate::config::Provider::Generic,
            response: None,
            destinations: Vec::new(),
            timezone: jiff::tz::TimeZone::UTC,
            dedupe_window: None,
            auth: Vec::new(),
            rate_limit: None,
            responder: None,
            call_key: CallKey::Field(Field::Id),
            public_url: None,
            sequence: None,
        };
        let place = call_place(&source, &payload, &event, 1000).unwrap();
        assert_eq!(place, CallPlace { key: "leg-1".into(), rank: Some(2), sequence: None });
        source.call_key = CallKey::Payload(vec!["data".into(), "sid".into()]);
        let window = std::time::Duration::from_secs(2);
        source.sequence = Some(SequenceOrder { path: Some(vec!["data".into(), "seq".into()]), window });
        let place = call_place(&source, &payload, &event, 1000).unwrap();
        assert_eq!(place, CallPlace { key: "CA1".into(), rank: Some(2), sequence: Some((7, 3000)) });
        // A number is a key too; a missing key means no call; a missing sequence, arrival order.
        source.call_key = CallKey::Payload(vec!["n".into()]);
        source.sequence = Some(SequenceOrder { path: Some(vec!["missing".into()]), window });
        assert_eq!(call_place(&source, &payload, &event, 1000).unwrap().key, "3");
        assert_eq!(call_place(&source, &payload, &event, 1000).unwrap().sequence, None);
        source.call_key = CallKey::Payload(vec!["nope".into()]);
        assert_eq!(call_place(&source, &payload, &event, 1000), None);
    }

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
