//! Streams and buckets, created at start-up, idempotently.

use std::time::Duration;

use async_nats::jetstream::{
    self, kv,
    stream::{Config, DiscardPolicy, RetentionPolicy, StorageType},
};

use crate::{Bus, BusError, names::*};

/// Sizes and replication of the JetStream topology.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Replicas per stream and bucket (1 for a single server, 3 in a cluster).
    pub replicas: usize,
    /// Byte limit of each of IN and OUT; past it, new messages are refused, old ones kept.
    pub max_bytes: i64,
    /// How long submitted events and deliveries are kept.
    pub max_age: Duration,
    /// JetStream de-duplication window; longer than any client retry.
    pub duplicate_window: Duration,
    /// How long an idempotency key is remembered beyond the de-duplication window.
    pub idempotency_ttl: Duration,
    /// Each agency's share of IN: units ([`QUOTA_UNIT_BYTES`] of an event, started) it may
    /// submit within `max_age`, the time IN keeps them; past it, its Submit is refused and
    /// nobody else's.
    pub agency_quota: i64,
    /// Each recipient's share of OUT: deliveries of one message type waiting for it; past
    /// it, its further deliveries wait in IN and nobody else's.
    pub recipient_share: i64,
    /// How long audit records and their chain links are kept (zero: for ever); signed
    /// checkpoints are kept for ever.
    pub audit_max_age: Duration,
}

impl Default for Topology {
    fn default() -> Self {
        Self {
            replicas: 1,
            max_bytes: 1 << 30,
            max_age: Duration::from_secs(30 * 24 * 3600),
            duplicate_window: Duration::from_secs(10 * 60),
            idempotency_ttl: Duration::from_secs(7 * 24 * 3600),
            agency_quota: 10_000,
            recipient_share: 10_000,
            audit_max_age: Duration::from_secs(10 * 365 * 24 * 3600),
        }
    }
}

/// The differences of an existing stream from the wanted configuration: those that weaken
/// a guarantee, and those that are only reported.
pub fn compare(wanted: &Config, existing: &Config) -> (Vec<String>, Vec<String>) {
    let mut weaker = Vec::new();
    let mut softer = Vec::new();
    if existing.num_replicas < wanted.num_replicas {
        weaker.push(format!(
            "{} replica(s) (expected {})",
            existing.num_replicas, wanted.num_replicas
        ));
    }
    if existing.storage != wanted.storage {
        weaker.push(format!(
            "{:?} storage (expected {:?})",
            existing.storage, wanted.storage
        ));
    }
    if wanted.deny_delete && !existing.deny_delete {
        weaker.push("message delete allowed (expected deny_delete)".into());
    }
    if wanted.deny_purge && !existing.deny_purge {
        weaker.push("purge allowed (expected deny_purge)".into());
    }
    if existing.retention != wanted.retention {
        weaker.push(format!(
            "{:?} retention (expected {:?})",
            existing.retention, wanted.retention
        ));
    }
    if existing.discard != wanted.discard {
        weaker.push(format!(
            "discard {:?} (expected {:?}: nothing old is evicted)",
            existing.discard, wanted.discard
        ));
    }
    if existing.subjects != wanted.subjects {
        weaker.push(format!(
            "subjects {:?} (expected {:?})",
            existing.subjects, wanted.subjects
        ));
    }
    if existing.max_age != wanted.max_age {
        softer.push(format!(
            "max_age {:?} (configured {:?})",
            existing.max_age, wanted.max_age
        ));
    }
    if existing.max_bytes != wanted.max_bytes {
        softer.push(format!(
            "max_bytes {} (configured {})",
            existing.max_bytes, wanted.max_bytes
        ));
    }
    // 0 and -1 both mean "no limit" (the server reports -1 for a limit asked as 0)
    let per_subject = |n: i64| if n <= 0 { -1 } else { n };
    if per_subject(existing.max_messages_per_subject) != per_subject(wanted.max_messages_per_subject) {
        softer.push(format!(
            "max_messages_per_subject {} (configured {})",
            existing.max_messages_per_subject, wanted.max_messages_per_subject
        ));
    }
    if wanted.discard_new_per_subject && !existing.discard_new_per_subject {
        weaker.push("discard_new_per_subject off (expected on: a share is refused, never evicted)".into());
    }
    if !wanted.allow_rollup && existing.allow_rollup {
        weaker
            .push("rollup headers allowed (expected none: a record is never rolled up or purged by a publish)".into());
    }
    if existing.duplicate_window != wanted.duplicate_window {
        softer.push(format!(
            "duplicate_window {:?} (configured {:?})",
            existing.duplicate_window, wanted.duplicate_window
        ));
    }
    (weaker, softer)
}

impl Topology {
    fn stream(&self, name: &str, prefix: &str, retention: RetentionPolicy) -> Config {
        Config {
            name: name.to_owned(),
            subjects: vec![format!("{prefix}.>")],
            retention,
            storage: StorageType::File,
            num_replicas: self.replicas,
            discard: DiscardPolicy::New,
            duplicate_window: self.duplicate_window,
            // IN and OUT only (below): a full status or audit stream would stop routing
            // altogether, so those are bounded by the server's storage limits instead
            max_bytes: -1,
            max_age: self.max_age,
            ..Default::default()
        }
    }

    /// Refuses an audit kept no longer than the data it describes.
    pub fn check(&self) -> Result<(), BusError> {
        let data = self.max_age.max(self.idempotency_ttl);
        if !self.audit_max_age.is_zero() && self.audit_max_age <= data {
            return Err(BusError::Other(format!(
                "the audit would be kept {} days, not longer than the data it describes ({} days): set HENVIS_AUDIT_RETENTION_DAYS above that (or 0 to keep it for ever)",
                self.audit_max_age.as_secs() / 86_400,
                data.as_secs().div_ceil(86_400)
            )));
        }
        Ok(())
    }

    /// The configurations of every stream.
    pub fn streams(&self) -> Vec<Config> {
        let history = |mut c: Config, max_age: Duration| {
            // the streams that must never lose history: no delete, no purge, expiry only
            // after the audit's own retention (years)
            c.deny_delete = true;
            c.deny_purge = true;
            c.max_age = max_age;
            c
        };
        vec![
            Config {
                deny_delete: true,
                deny_purge: true,
                max_bytes: self.max_bytes,
                ..self.stream(STREAM_IN, IN_PREFIX, RetentionPolicy::Limits)
            },
            Config {
                max_bytes: self.max_bytes,
                // per recipient and type: one absent recipient cannot fill OUT for all
                max_messages_per_subject: self.recipient_share.max(1),
                discard_new_per_subject: true,
                ..self.stream(STREAM_OUT, OUT_PREFIX, RetentionPolicy::WorkQueue)
            },
            // one subject per agency, one message per unit submitted, kept as long as IN
            // keeps the events: the server refuses the unit past the agency's share
            Config {
                max_messages_per_subject: self.agency_quota.max(1),
                discard_new_per_subject: true,
                duplicate_window: Duration::from_secs(1),
                ..self.stream(STREAM_QUOTA, QUOTA_PREFIX, RetentionPolicy::Limits)
            },
            self.stream(STREAM_STATUS, STATUS_PREFIX, RetentionPolicy::Limits),
            // dead letters are kept until an administrator has dealt with them
            Config {
                max_age: Duration::ZERO,
                ..self.stream(STREAM_DEAD, DEAD_PREFIX, RetentionPolicy::Limits)
            },
            history(
                self.stream(STREAM_AUDIT, AUDIT_PREFIX, RetentionPolicy::Limits),
                self.audit_max_age,
            ),
            history(
                self.stream(STREAM_CHAIN, CHAIN_PREFIX, RetentionPolicy::Limits),
                self.audit_max_age,
            ),
            // checkpoints are small and prove what expired was expired, not removed
            history(
                self.stream(STREAM_CHECKPOINTS, CHECKPOINT_PREFIX, RetentionPolicy::Limits),
                Duration::ZERO,
            ),
            self.case_key_stream(),
        ]
    }

    /// The case-key bucket's stream: a key-value bucket in which every key is written
    /// once. Sector services must create keys for the cases they open, and NATS
    /// permissions cannot tell a create from an overwrite, so the stream itself refuses a
    /// second record under a key (one per subject, the new one discarded) and every
    /// rollup (a purge by publish): no service can replace, delete or purge another
    /// case's key and so make its stored events unreadable. Only a purge request to the
    /// stream, which the router and the admin service alone may make, removes a key, for
    /// an erasure's tombstone to take its place.
    fn case_key_stream(&self) -> Config {
        Config {
            description: Some(
                "per-case data keys wrapped with the master key, each written once; a tombstone once a case is erased"
                    .into(),
            ),
            max_messages_per_subject: 1,
            discard_new_per_subject: true,
            allow_rollup: false,
            deny_delete: true,
            deny_purge: false,
            allow_direct: true,
            max_age: Duration::ZERO,
            ..self.stream(
                &format!("KV_{BUCKET_CASE_KEYS}"),
                &format!("$KV.{BUCKET_CASE_KEYS}"),
                RetentionPolicy::Limits,
            )
        }
    }

    /// Creates every stream and bucket that does not exist yet. Refuses to start on a
    /// cluster with one replica, and on an existing stream weaker than this topology asks
    /// for (fewer replicas, memory storage, delete or purge allowed where they must not
    /// be, another retention or discard policy); reports softer differences (limits, ages,
    /// the duplicate window) in the log.
    pub async fn ensure(&self, bus: &Bus) -> Result<(), BusError> {
        self.check()?;
        let js: &jetstream::Context = bus.jetstream();
        if bus.client().server_info().cluster.is_some() && self.replicas < 3 {
            return Err(BusError::Other(format!(
                "NATS is a cluster but streams would have {} replica(s): set HENVIS_STREAM_REPLICAS=3 (or more)",
                self.replicas
            )));
        }
        for cfg in self.streams() {
            let mut stream = js
                .get_or_create_stream(cfg.clone())
                .await
                .map_err(|e| BusError::Unavailable(e.to_string()))?;
            let existing = stream
                .info()
                .await
                .map_err(|e| BusError::Unavailable(e.to_string()))?
                .config
                .clone();
            let (weaker, softer) = compare(&cfg, &existing);
            if !weaker.is_empty() {
                return Err(BusError::Other(format!(
                    "stream `{}` exists with a weaker configuration: {}; migrate it (e.g. `nats stream edit {}`) or start with matching settings",
                    cfg.name,
                    weaker.join(", "),
                    cfg.name
                )));
            }
            if !softer.is_empty() {
                tracing::warn!(stream = %cfg.name, differences = %softer.join(", "), "existing stream differs from the configured topology");
            }
        }
        // (bucket, description, history, max age): records written once per key and
        // expiring keep no history; linkage keeps none either, so what is erased from it
        // leaves no older revision behind (case keys: a stream of their own, above); the
        // rest keep five revisions
        let none = Duration::ZERO;
        for (bucket, description, history, max_age) in [
            (
                BUCKET_IDEMPOTENCY,
                "submitted idempotency keys per agency, kept for days",
                1,
                self.idempotency_ttl,
            ),
            (
                BUCKET_DELIVERED,
                "which events were delivered to which agency (for referral responses)",
                1,
                self.max_age,
            ),
            (
                BUCKET_LINKAGE,
                "keyed linkage tokens of reports' identity fields and proposed case links (router only)",
                1,
                none,
            ),
            (
                BUCKET_CASES,
                "henvis case records, keyed by pseudonymous case id",
                5,
                none,
            ),
            (BUCKET_RULES, "the active henvis rule set", 5, none),
            (
                BUCKET_GOVERNANCE,
                "rule-set and directory proposals, their tests and decisions",
                5,
                none,
            ),
            (
                BUCKET_DIRECTORY,
                "the approved directory changes, applied by every service",
                5,
                none,
            ),
            (
                BUCKET_ALERT_DETAILS,
                "alerted events, redacted to the classes granted to the district",
                5,
                none,
            ),
            (
                BUCKET_ORDER,
                "per case, the IN sequence up to which every event has been routed",
                5,
                none,
            ),
            (
                BUCKET_ALERTS,
                "police case alerts and their state, keyed by district and alert id",
                5,
                none,
            ),
            (
                BUCKET_ALARMS,
                "services that cannot write the audit (and so deliver nothing), for administrators",
                5,
                none,
            ),
        ] {
            if js.get_key_value(bucket).await.is_err() {
                js.create_key_value(kv::Config {
                    bucket: bucket.to_owned(),
                    description: description.to_owned(),
                    history,
                    max_age,
                    storage: StorageType::File,
                    num_replicas: self.replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| BusError::Unavailable(e.to_string()))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_outlives_the_data_it_describes() {
        let day = Duration::from_secs(86_400);
        let t = Topology::default();
        assert!(t.check().is_ok());
        let short = Topology {
            audit_max_age: 20 * day,
            ..Topology::default()
        };
        let e = short.check().unwrap_err().to_string();
        assert!(e.contains("20 days") && e.contains("(30 days)"), "{e}");
        assert!(
            Topology {
                audit_max_age: Duration::ZERO,
                ..short
            }
            .check()
            .is_ok(),
            "kept for ever"
        );
        let audit = Topology::default()
            .streams()
            .into_iter()
            .map(|c| (c.name, c.max_age))
            .collect::<std::collections::BTreeMap<_, _>>();
        assert_eq!(audit[STREAM_AUDIT], 3650 * day);
        assert_eq!(audit[STREAM_CHAIN], 3650 * day);
        assert_eq!(audit[STREAM_CHECKPOINTS], Duration::ZERO);
    }

    #[test]
    fn a_weaker_existing_stream_is_named_and_softer_differences_only_reported() {
        let t = Topology {
            replicas: 3,
            ..Default::default()
        };
        let wanted = t.streams().into_iter().find(|c| c.name == STREAM_AUDIT).unwrap();
        assert_eq!(compare(&wanted, &wanted), (vec![], vec![]));
        let weak = Config {
            num_replicas: 1,
            deny_purge: false,
            storage: StorageType::Memory,
            duplicate_window: Duration::from_secs(1),
            ..wanted.clone()
        };
        let (weaker, softer) = compare(&wanted, &weak);
        assert_eq!(weaker.len(), 3, "{weaker:?}");
        // "no limit" said two ways is no difference
        let reported = Config {
            max_messages_per_subject: -1,
            ..wanted.clone()
        };
        assert_eq!(compare(&wanted, &reported), (vec![], vec![]));
        assert!(weaker[0].contains("1 replica(s) (expected 3)"));
        assert_eq!(softer.len(), 1, "{softer:?}");
    }
}
