//! Delivery marks: `<recipient>.<event id>` → the event's case, sender and type, written by
//! the router once the delivery is stored in OUT (one write per delivery). A sector service may read only its own agencies' marks
//! (a subject-scoped direct get), which is how Submit checks that a `referral_response`
//! answers an event the responder actually received, without reading anyone's statuses.

use crate::{Bus, BusError, names::delivered_key};

/// Case-record revisions per page of [`Bus::case_revisions`].
pub const CASE_PAGE: usize = 2000;

/// One page of case-record revisions.
pub struct CaseRevisions {
    /// (case id, the record; `None` for a deletion), in the order they were stored.
    pub revisions: Vec<(String, Option<henvis_domain::CaseRecord>)>,
    /// Where the next page starts, if there may be one.
    pub next: Option<u64>,
}

/// What the router remembers of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Delivered {
    /// The case of the delivered event.
    pub case_id: String,
    /// The agency that sent it.
    pub sender: String,
    /// Its message type.
    pub message_type: String,
    /// Whether the delivery is stored in OUT (set once its publish was acknowledged): a
    /// later attempt, however late, never publishes it again.
    #[serde(default)]
    pub published: bool,
}

/// Which decision the router audits for an event (key `_decided.<event id>` in the
/// delivery-marks bucket, which no agency id can read: ids never start with `_`), set
/// before the audit record: a later attempt under another rule set or case revision voids
/// the earlier decision first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DecisionMark {
    /// The rule set that decided.
    pub rule_set_version: String,
    /// The case revision it rested on.
    pub case_revision: u64,
    /// Whether its void record is stored already.
    #[serde(default)]
    pub voided: bool,
}

fn decision_key(event_id: &str) -> String {
    format!("_decided.{event_id}")
}

impl Bus {
    /// The decision audited for `event_id`, if any.
    pub async fn decision_mark(&self, event_id: &str) -> Result<Option<DecisionMark>, BusError> {
        Ok(self
            .delivered_bucket()
            .await?
            .get::<DecisionMark>(&decision_key(event_id))
            .await?
            .map(|v| v.record))
    }

    /// Records the decision about to be audited for `event_id` unless one is recorded:
    /// `None` when it was stored, else the mark found (one round trip on the common path).
    pub async fn first_decision_mark(
        &self,
        event_id: &str,
        mark: &DecisionMark,
    ) -> Result<Option<DecisionMark>, BusError> {
        let bucket = self.delivered_bucket().await?;
        if bucket.create_new(&decision_key(event_id), mark).await?.is_some() {
            return Ok(None);
        }
        Ok(bucket
            .get::<DecisionMark>(&decision_key(event_id))
            .await?
            .map(|v| v.record))
    }

    /// Records which decision is audited for `event_id`.
    pub async fn set_decision_mark(&self, event_id: &str, mark: &DecisionMark) -> Result<(), BusError> {
        self.delivered_bucket()
            .await?
            .put(&decision_key(event_id), mark)
            .await
            .map(|_| ())
    }

    /// Every stored delivery (a mark set published), as (recipient, event id): what the
    /// audit's completeness is checked against.
    pub async fn stored_deliveries(&self) -> Result<Vec<(String, String)>, BusError> {
        Ok(self
            .latest_values::<Delivered>(crate::BUCKET_DELIVERED)
            .await?
            .into_iter()
            .filter(|(_, m)| m.published)
            .filter_map(|(k, _)| k.split_once('.').map(|(r, e)| (r.to_owned(), e.to_owned())))
            .collect())
    }

    /// Every case record as it stands, by case id (for the mapping study's counts).
    pub async fn stored_cases(
        &self,
    ) -> Result<std::collections::BTreeMap<String, henvis_domain::CaseRecord>, BusError> {
        Ok(self.latest_values(crate::BUCKET_CASES).await?.into_iter().collect())
    }

    /// Case records revision by revision, in the order they were stored, one page of at
    /// most [`CASE_PAGE`] from the case bucket's stream sequence `from` on: for walks over
    /// every case in bounded memory.
    pub async fn case_revisions(&self, from: u64) -> Result<CaseRevisions, BusError> {
        let prefix = format!("$KV.{}.", crate::BUCKET_CASES);
        let records = self
            .stored_records(&format!("KV_{}", crate::BUCKET_CASES), from, CASE_PAGE)
            .await?;
        let next = records.last().filter(|_| records.len() == CASE_PAGE).map(|r| r.seq + 1);
        let revisions = records
            .into_iter()
            .filter_map(|r| {
                let case = r.subject.strip_prefix(&prefix)?.to_owned();
                Some((case, serde_json::from_slice(&r.payload).ok()))
            })
            .collect();
        Ok(CaseRevisions { revisions, next })
    }

    /// Every alert record as it stands (for the audit's completeness: the steps contact
    /// persons took).
    pub async fn stored_alerts(&self) -> Result<Vec<henvis_domain::AlertRecord>, BusError> {
        Ok(self
            .latest_values(crate::BUCKET_ALERTS)
            .await?
            .into_iter()
            .map(|(_, a)| a)
            .collect())
    }

    /// The latest value of every key of `bucket` that parses as `T` (read through the
    /// bucket's stream, deleted keys left out).
    pub(crate) async fn latest_values<T: serde::de::DeserializeOwned>(
        &self,
        bucket: &str,
    ) -> Result<Vec<(String, T)>, BusError> {
        let prefix = format!("$KV.{bucket}.");
        let mut last: std::collections::BTreeMap<String, Option<T>> = std::collections::BTreeMap::new();
        for r in self.stored_records(&format!("KV_{bucket}"), 1, usize::MAX).await? {
            let Some(key) = r.subject.strip_prefix(&prefix) else {
                continue;
            };
            last.insert(key.to_owned(), serde_json::from_slice(&r.payload).ok());
        }
        Ok(last.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect())
    }

    /// Whether `event_id`'s delivery to `recipient` is marked stored in OUT (by an earlier
    /// attempt: then it is never published again, however late).
    pub async fn delivery_published(&self, recipient: &str, event_id: &str) -> Result<bool, BusError> {
        Ok(self
            .delivered_bucket()
            .await?
            .get::<Delivered>(&delivered_key(recipient, event_id))
            .await?
            .is_some_and(|m| m.record.published))
    }

    /// Records that the delivery of `event_id` to `recipient` is stored in OUT: one create
    /// on the common path; a mark an earlier attempt (or version) left unpublished is set
    /// published, and a published one is kept.
    pub async fn mark_published(&self, recipient: &str, event_id: &str, mark: &Delivered) -> Result<(), BusError> {
        let bucket = self.delivered_bucket().await?;
        let key = delivered_key(recipient, event_id);
        let published = Delivered {
            published: true,
            ..mark.clone()
        };
        if bucket.create_new(&key, &published).await?.is_some() {
            return Ok(());
        }
        bucket
            .modify::<Delivered>(
                &key,
                || Some(published.clone()),
                |d| !std::mem::replace(&mut d.published, true),
            )
            .await
            .map(|_| ())
    }

    /// The mark of `event_id`'s delivery to `recipient`, if it was delivered.
    pub async fn delivered_to(&self, recipient: &str, event_id: &str) -> Result<Option<Delivered>, BusError> {
        let key = delivered_key(recipient, event_id);
        if henvis_domain::AgencyId::parse(recipient).is_err() || henvis_domain::EventId::parse(event_id).is_err() {
            return Ok(None);
        }
        self.delivered_bucket().await?.get_scoped(&key).await
    }
}
