//! What Switchboard knows of each provider besides its field names: how it signs its
//! callbacks, what answer it expects and how long it waits for one. Config defaults come
//! from here (`auth = [{ scheme = "provider" }]`, a responder's timeout and fallback, the
//! acknowledgement), and so does `switchboard providers`.

use std::time::Duration;

use crate::config::Provider;

/// The signature scheme a provider's own callbacks carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signature {
    /// The provider signs nothing: use a token or basic credentials in the URL, or its
    /// published addresses with `ip_allow`.
    None,
    /// `X-Twilio-Signature`: HMAC-SHA1 over the full URL and the sorted form fields.
    Twilio,
    /// `X-Plivo-Signature-V3` with its nonce: HMAC-SHA256 over the URL, fields and nonce.
    PlivoV3,
    /// `Authorization: Bearer <JWT>`, HS256 under the signature secret, with the body's
    /// SHA-256 in its `payload_hash` claim.
    VonageJwt,
    /// `telnyx-signature-ed25519` over `{telnyx-timestamp}|{body}`.
    Telnyx,
}

impl Signature {
    /// The `scheme` name a source's `auth` would write for it.
    pub fn scheme(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Twilio => Some("twilio"),
            Self::PlivoV3 => Some("plivo-v3"),
            Self::VonageJwt => Some("vonage-jwt"),
            Self::Telnyx => Some("telnyx"),
        }
    }
}

/// What a provider expects back from the URL it calls.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    /// The format a synchronous responder answers in, for people: "TwiML", "NCCO JSON"…
    pub format: &'static str,
    /// The acknowledgement ingest sends when the source sets no `response`: a document the
    /// provider accepts and that asks nothing of the call. `None`: Switchboard's JSON.
    pub ack: Option<(&'static str, &'static str)>,
    /// What a responder's source answers when the responder fails or is late, unless it
    /// sets `fallback_response`: the provider's do-nothing document. `None`: required.
    pub fallback: Option<(&'static str, &'static str)>,
    /// How long the provider waits for an answer, where it documents it.
    pub deadline: Option<Duration>,
    /// Statuses besides success that carry meaning to the provider and are relayed from a
    /// responder as they are (Exotel Passthru branches on 302).
    pub pass_through: &'static [u16],
}

/// One provider profile.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    pub provider: Provider,
    /// The provider's name as people write it.
    pub title: &'static str,
    /// What the provider sends, in a line.
    pub sends: &'static str,
    pub signature: Signature,
    pub answer: Answer,
    /// Where the provider numbers a call's callbacks, for `order_by = "provider_sequence"`.
    pub sequence: Option<&'static str>,
}

impl Profile {
    /// A responder's default timeout: the provider's deadline less a margin to send the
    /// fallback before the provider gives up (a quarter of it, at most 3 s); 3 s where the
    /// provider documents none.
    pub fn respond_timeout(&self) -> Duration {
        match self.answer.deadline {
            Some(deadline) => deadline - (deadline / 4).min(Duration::from_secs(3)),
            None => Duration::from_secs(3),
        }
    }
}

const XML: &str = "application/xml";
const EMPTY_XML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>";

/// `deadline` in seconds, 0 where the provider documents none.
const fn answer(format: &'static str, ack: Option<(&'static str, &'static str)>, deadline: u64) -> Answer {
    let deadline = if deadline == 0 { None } else { Some(Duration::from_secs(deadline)) };
    Answer { format, ack, fallback: ack, deadline, pass_through: &[] }
}

pub fn of(provider: Provider) -> Profile {
    let (title, sends, signature, answer, sequence) = match provider {
        Provider::Wavecell => (
            "Wavecell (8x8)",
            "JSON: call received and DTMF on the handleURL, with the call's status",
            Signature::None,
            answer("JSON commands array", None, 0),
            None,
        ),
        Provider::Telecmi => (
            "TeleCMI",
            "JSON: live events (waiting, started, answered, hangup) and call detail records",
            Signature::None,
            answer("JSON", None, 0),
            None,
        ),
        Provider::Mobtexting => {
            ("MOBtexting", "JSON: a report after each campaign call", Signature::None, answer("JSON", None, 0), None)
        }
        Provider::Callerdesk => (
            "Callerdesk",
            "JSON or form: a live callback while connected and a call report after",
            Signature::None,
            answer("JSON", None, 0),
            None,
        ),
        Provider::Twilio => (
            "Twilio",
            "form POST: the voice URL, status callbacks, Gather digits, recording status",
            Signature::Twilio,
            answer("TwiML (application/xml)", Some((XML, EMPTY_XML)), 15),
            Some("SequenceNumber"),
        ),
        Provider::Plivo => (
            "Plivo",
            "form POST: answer, ring and hangup URLs, GetInput digits, recording callbacks",
            Signature::PlivoV3,
            // Plivo's documented defaults: 40 s to read the answer (55 s in all).
            answer("Plivo XML (application/xml)", Some((XML, EMPTY_XML)), 40),
            None,
        ),
        Provider::Exotel => (
            "Exotel",
            "GET query strings from Passthru and form POST status callbacks",
            Signature::None,
            Answer {
                pass_through: &[302],
                ..answer("Passthru: 200 or 302 picks the branch", Some(("text/plain", "")), 15)
            },
            None,
        ),
        Provider::Vonage => (
            "Vonage",
            "JSON: answer URL (GET query), event URL statuses, input (DTMF), recordings",
            Signature::VonageJwt,
            // Events want a bare 200 (a body could be read as an NCCO); what an empty NCCO
            // does to a call is undocumented, so a responder's fallback is the user's to write.
            Answer { fallback: None, ..answer("NCCO (JSON array)", Some(("text/plain", "")), 5) },
            None,
        ),
        Provider::Telnyx => (
            "Telnyx",
            "JSON envelopes: call.initiated, call.answered, call.dtmf.received, call.hangup, call.recording.saved…",
            Signature::Telnyx,
            // The connection's `webhook_timeout_secs`; Telnyx documents no default.
            answer("200, then commands by API", None, 0),
            Some("occurred_at"),
        ),
        Provider::Knowlarity => (
            "Knowlarity",
            "JSON: call events and the call log after each call",
            Signature::None,
            answer("JSON", None, 0),
            None,
        ),
        Provider::Ozonetel => (
            "Ozonetel",
            "CloudAgent call summaries (form field `data`) and live events (JSON); KooKoo IVR GETs",
            Signature::None,
            Answer {
                fallback: Some((XML, "<?xml version=\"1.0\" encoding=\"UTF-8\"?><response><hangup/></response>")),
                ..answer("KooKoo XML <response> (application/xml)", None, 0)
            },
            None,
        ),
        Provider::Myoperator => {
            ("MyOperator", "JSON: the call log after each call", Signature::None, answer("JSON", None, 0), None)
        }
        Provider::Generic => (
            "Generic",
            "any JSON or form body; nothing is normalized (templates read payload.*)",
            Signature::None,
            answer("anything", None, 0),
            None,
        ),
    };
    Profile { provider, title, sends, signature, answer, sequence }
}
