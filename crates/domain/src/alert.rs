//! A police case alert and its state. It carries no details of the child: ids, kind,
//! urgency, district and times only; the details are fetched by an authorised call.

use crate::{AgencyId, EventId, PersonId};

/// How urgent a police alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Urgency {
    /// Within the working day.
    Normal,
    /// Now; escalated when unclaimed.
    Urgent,
}

impl Urgency {
    /// The lowercase name (rule files, records, the API).
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::Normal => "normal",
            Urgency::Urgent => "urgent",
        }
    }
}

impl std::str::FromStr for Urgency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "normal" => Ok(Urgency::Normal),
            "urgent" => Ok(Urgency::Urgent),
            other => Err(format!("urgency `{other}`: expected `normal` or `urgent`")),
        }
    }
}

/// Where an alert stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum AlertState {
    /// Nobody has taken it.
    Open,
    /// A contact person took it.
    Claimed {
        /// Who.
        by: PersonId,
        /// When (unix seconds).
        at: i64,
    },
    /// Unclaimed past its deadline; passed to the national unit.
    Escalated {
        /// To whom.
        to: AgencyId,
        /// When (unix seconds).
        at: i64,
    },
    /// The contact person who held it closed it.
    Closed {
        /// Who.
        by: PersonId,
        /// When (unix seconds).
        at: i64,
        /// How (`child_safe`, `investigation_opened`, `referred`, `no_action`, `duplicate`).
        outcome: String,
    },
}

/// One alert, keyed `<district>.<alert id>` in the alerts bucket.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AlertRecord {
    /// The alert id (the id of the event that raised it).
    pub alert_id: EventId,
    /// The case.
    pub case_id: String,
    /// The message type that raised it (e.g. `child_missing`).
    pub kind: String,
    /// How urgent.
    pub urgency: Urgency,
    /// The police agency whose contact persons see it.
    pub district: AgencyId,
    /// When it was raised (the event's submission), unix seconds.
    pub raised_at: i64,
    /// Its state.
    pub state: AlertState,
    /// The district it was escalated from, for the national unit's copy.
    #[serde(default)]
    pub escalated_from: Option<AgencyId>,
    /// The classes the district was granted for the event (upper-case names).
    pub granted_classes: Vec<String>,
    /// For an escalated alert: whether the national unit's copy and the guardian's event
    /// are recorded (until then every police service retries them, idempotently).
    #[serde(default)]
    pub escalation_notified: bool,
    /// Every step taken, for the record: (action, by, unix seconds).
    #[serde(default)]
    pub history: Vec<(String, String, i64)>,
}

impl AlertRecord {
    /// Since when it has been open this time: when it was raised, or last reopened (its
    /// escalation deadline counts from then).
    pub fn open_since(&self) -> i64 {
        self.history
            .iter()
            .filter(|(what, _, _)| what == crate::ALERT_REOPENED)
            .map(|(_, _, at)| *at)
            .max()
            .map_or(self.raised_at, |t| t.max(self.raised_at))
    }

    /// The key in the alerts bucket.
    pub fn key(&self) -> String {
        format!("{}.{}", self.district, self.alert_id)
    }
}
