//! Security-relevant refusals — a certificate refused, a principal on the wrong service, a
//! forged sender or actor, a workflow guard violated — are logged (ids and the reason only,
//! at most one line per kind and principal each [`LOG_EVERY`]) and counted, so an operator
//! sees an attack or a misconfigured agency without the log being flooded.

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// At most one log line per (kind, principal) in this period; the rest are counted.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// What kind of refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// A client certificate was refused (none, untrusted, expired, revoked, stale CRL).
    Certificate,
    /// A trusted certificate whose principal may not use this port.
    NotAdmitted,
    /// A principal calling the service of another sector.
    WrongService,
    /// A body claiming another sender or actor than the certificate proves.
    ForgedIdentity,
    /// A workflow guard or case-participation rule refused the event.
    Guard,
}

impl Refusal {
    /// The name used in logs and counts.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Certificate => "certificate",
            Self::NotAdmitted => "not_admitted",
            Self::WrongService => "wrong_service",
            Self::ForgedIdentity => "forged_identity",
            Self::Guard => "guard",
        }
    }
}

#[derive(Default)]
struct State {
    counts: BTreeMap<Refusal, u64>,
    last_logged: BTreeMap<(Refusal, String), (Instant, u64)>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

/// Records one refusal of `principal` (an id, or the peer address when no certificate
/// named one) with a data-free `reason`.
pub fn record(kind: Refusal, principal: &str, reason: &str) {
    let mut guard = match STATE.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let state = guard.get_or_insert_with(State::default);
    *state.counts.entry(kind).or_default() += 1;
    let now = Instant::now();
    let key = (kind, principal.to_owned());
    let entry = state.last_logged.entry(key).or_insert((now - LOG_EVERY * 2, 0));
    if now.duration_since(entry.0) >= LOG_EVERY {
        let suppressed = entry.1;
        *entry = (now, 0);
        tracing::warn!(
            refusal = kind.as_str(),
            principal,
            reason,
            suppressed,
            "security refusal"
        );
    } else {
        entry.1 += 1;
    }
    // bound the memory a flood of distinct principals can take
    if state.last_logged.len() > 10_000 {
        state
            .last_logged
            .retain(|_, (at, _)| now.duration_since(*at) < LOG_EVERY);
    }
}

/// How many refusals of each kind this process has recorded.
pub fn counts() -> BTreeMap<&'static str, u64> {
    let guard = match STATE.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    guard
        .as_ref()
        .map(|s| s.counts.iter().map(|(k, v)| (k.as_str(), *v)).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_counted_even_when_not_logged() {
        let before = counts().get("guard").copied().unwrap_or(0);
        for _ in 0..50 {
            record(Refusal::Guard, "agency:ngo-test", "not a participant");
        }
        assert_eq!(counts().get("guard").copied().unwrap_or(0), before + 50);
    }
}
