//! The normalized call event, and the names templates use for its fields.

use serde::{Deserialize, Serialize};

use super::Status;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

/// One call event, whatever the provider. Absent fields are `None` (and `null` in JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallEvent {
    /// Switchboard's id for this event (also the `webhook-id` of its deliveries).
    pub event_id: String,
    pub tenant: String,
    pub source: String,
    pub provider: String,
    /// When Switchboard received the callback.
    pub received_at: String,
    /// The provider's id for the call (leg): callId, cmiuuid, mid, CallSid.
    pub id: Option<String>,
    /// The parent call (leg A) of this leg, where the provider has legs: Twilio `ParentCallSid`.
    pub parent_id: Option<String>,
    /// The provider's id for the whole conversation across legs, when it has one.
    pub session_id: Option<String>,
    /// What happened: received, dtmf, waiting, answered, report, live…
    pub event: Option<String>,
    pub direction: Option<Direction>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// The answering party (agent number).
    pub agent: Option<String>,
    pub status: Status,
    /// The provider's own status word, as sent.
    pub provider_status: Option<String>,
    /// Whole seconds.
    pub duration: Option<i64>,
    pub talk_duration: Option<i64>,
    /// When the event happened, per the provider.
    pub occurred_at: Option<String>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub recording_url: Option<String>,
    /// Digits pressed, as text: `*`, `#` and leading zeros kept.
    pub dtmf: Option<String>,
    pub sip_status: Option<i64>,
    pub error_code: Option<String>,
    /// The provider's order of this call's callbacks: Twilio `SequenceNumber`, Telnyx
    /// `occurred_at` in Unix microseconds.
    pub sequence: Option<i64>,
}

/// A normalized field, resolved from its name when a template is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    EventId,
    Tenant,
    Source,
    Provider,
    ReceivedAt,
    Id,
    ParentId,
    SessionId,
    Event,
    Direction,
    From,
    To,
    Agent,
    Status,
    ProviderStatus,
    Duration,
    TalkDuration,
    OccurredAt,
    StartedAt,
    EndedAt,
    RecordingUrl,
    Dtmf,
    SipStatus,
    ErrorCode,
    Sequence,
}

/// A field's value, borrowed from the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValue<'a> {
    Missing,
    Text(&'a str),
    Int(i64),
}

impl Field {
    pub const NAMES: [(&'static str, Field); 25] = [
        ("event_id", Field::EventId),
        ("tenant", Field::Tenant),
        ("source", Field::Source),
        ("provider", Field::Provider),
        ("received_at", Field::ReceivedAt),
        ("id", Field::Id),
        ("parent_id", Field::ParentId),
        ("session_id", Field::SessionId),
        ("event", Field::Event),
        ("direction", Field::Direction),
        ("from", Field::From),
        ("to", Field::To),
        ("agent", Field::Agent),
        ("status", Field::Status),
        ("provider_status", Field::ProviderStatus),
        ("duration", Field::Duration),
        ("talk_duration", Field::TalkDuration),
        ("occurred_at", Field::OccurredAt),
        ("started_at", Field::StartedAt),
        ("ended_at", Field::EndedAt),
        ("recording_url", Field::RecordingUrl),
        ("dtmf", Field::Dtmf),
        ("sip_status", Field::SipStatus),
        ("error_code", Field::ErrorCode),
        ("sequence", Field::Sequence),
    ];

    pub fn parse(name: &str) -> Option<Field> {
        Self::NAMES.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    pub fn is_time(self) -> bool {
        matches!(self, Field::ReceivedAt | Field::OccurredAt | Field::StartedAt | Field::EndedAt)
    }
}

impl CallEvent {
    pub fn get(&self, field: Field) -> FieldValue<'_> {
        fn text(v: &Option<String>) -> FieldValue<'_> {
            v.as_deref().map_or(FieldValue::Missing, FieldValue::Text)
        }
        fn int(v: Option<i64>) -> FieldValue<'static> {
            v.map_or(FieldValue::Missing, FieldValue::Int)
        }
        match field {
            Field::EventId => FieldValue::Text(&self.event_id),
            Field::Tenant => FieldValue::Text(&self.tenant),
            Field::Source => FieldValue::Text(&self.source),
            Field::Provider => FieldValue::Text(&self.provider),
            Field::ReceivedAt => FieldValue::Text(&self.received_at),
            Field::Id => text(&self.id),
            Field::ParentId => text(&self.parent_id),
            Field::SessionId => text(&self.session_id),
            Field::Event => text(&self.event),
            Field::Direction => self.direction.map_or(FieldValue::Missing, |d| FieldValue::Text(d.as_str())),
            Field::From => text(&self.from),
            Field::To => text(&self.to),
            Field::Agent => text(&self.agent),
            Field::Status => FieldValue::Text(self.status.as_str()),
            Field::ProviderStatus => text(&self.provider_status),
            Field::Duration => int(self.duration),
            Field::TalkDuration => int(self.talk_duration),
            Field::OccurredAt => text(&self.occurred_at),
            Field::StartedAt => text(&self.started_at),
            Field::EndedAt => text(&self.ended_at),
            Field::RecordingUrl => text(&self.recording_url),
            Field::Dtmf => text(&self.dtmf),
            Field::SipStatus => int(self.sip_status),
            Field::ErrorCode => text(&self.error_code),
            Field::Sequence => int(self.sequence),
        }
    }
}
