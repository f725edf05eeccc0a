//! The normalized call status: Twilio's vocabulary, which most CPaaS users already know.
//! `completed` means answered and ended.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    Initiated,
    Ringing,
    InProgress,
    Completed,
    Busy,
    NoAnswer,
    Canceled,
    Rejected,
    Failed,
    #[default]
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Initiated => "initiated",
            Self::Ringing => "ringing",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Busy => "busy",
            Self::NoAnswer => "no_answer",
            Self::Canceled => "canceled",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
        }
    }

    pub const ALL: [Status; 11] = [
        Self::Queued,
        Self::Initiated,
        Self::Ringing,
        Self::InProgress,
        Self::Completed,
        Self::Busy,
        Self::NoAnswer,
        Self::Canceled,
        Self::Rejected,
        Self::Failed,
        Self::Unknown,
    ];

    /// The status's place in a call's life cycle: queued/initiated < ringing < in progress <
    /// every end state. `None` for `unknown`: it neither supersedes nor is superseded.
    pub fn rank(self) -> Option<i16> {
        Some(match self {
            Self::Queued | Self::Initiated => 1,
            Self::Ringing => 2,
            Self::InProgress => 3,
            Self::Completed | Self::Busy | Self::NoAnswer | Self::Canceled | Self::Rejected | Self::Failed => 4,
            Self::Unknown => return None,
        })
    }

    /// The rank of the last live status: ranks up to it describe a call still going on.
    pub const LAST_LIVE_RANK: i16 = 3;

    /// A SIP final response names the failure more precisely than most providers' words.
    pub fn refined_by_sip(self, sip: i64) -> Self {
        match sip {
            486 | 600 => Self::Busy,
            480 | 408 => Self::NoAnswer,
            487 => Self::Canceled,
            603 => Self::Rejected,
            _ => self,
        }
    }
}

/// A provider's word in a comparable form: lower case, without spaces, '-' or '_'.
pub fn word(s: &str) -> String {
    s.chars().filter(|c| !matches!(c, ' ' | '_' | '-')).flat_map(char::to_lowercase).collect()
}

/// The end-of-call words shared by the dialer platforms (MOBtexting, Callerdesk).
pub fn dialer(provider_word: &str) -> Status {
    match word(provider_word).as_str() {
        "answer" | "answered" | "completed" => Status::Completed,
        "busy" | "agentengaged" | "engaged" => Status::Busy,
        "noanswer" | "notanswered" | "missed" | "abandon" | "abandoned" | "abandonment" => Status::NoAnswer,
        "cancel" | "canceled" | "cancelled" => Status::Canceled,
        "rejected" | "reject" | "declined" => Status::Rejected,
        "failed" | "fail" | "congestion" | "chanunavail" | "error" => Status::Failed,
        "ringing" => Status::Ringing,
        "initiated" | "dialing" => Status::Initiated,
        _ => Status::Unknown,
    }
}
