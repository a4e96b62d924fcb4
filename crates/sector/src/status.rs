//! The status of a submitted event, per intended recipient, folded from the status
//! records the router and the inboxes append under the sender's subject.

use std::collections::BTreeMap;

use henvis_bus::{STREAM_STATUS, status_subject};
use henvis_domain::EventId;
use henvis_proto::henvis::broker::v1::{GetStatusResponse, RecipientStatus};
use prost::Message;

use crate::{ApiError, Caller, Core};

/// Reads the status of `event_id` as seen by its sender. Another agency's event reads as
/// not routed: the subject is scoped to the caller, so nothing of it is visible.
pub(crate) async fn get(core: &Core, caller: &Caller, event_id: &str) -> Result<GetStatusResponse, ApiError> {
    let id = EventId::parse(event_id).map_err(|e| ApiError::field("event_id", e.expected))?;
    let records = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        core.bus
            .read_subject(STREAM_STATUS, &status_subject(&caller.agency, &id.to_string())),
    )
    .await
    .map_err(|_| ApiError::Unavailable("status read timed out".into()))??;
    let mut out = GetStatusResponse {
        event_id: id.to_string(),
        routed: false,
        recipients: Vec::new(),
    };
    let mut by_recipient: BTreeMap<(String, String), RecipientStatus> = BTreeMap::new();
    for r in records {
        let rec = GetStatusResponse::decode(r).map_err(|e| ApiError::Internal(format!("status record: {e}")))?;
        out.routed |= rec.routed;
        for s in rec.recipients {
            let key = (
                s.recipient_agency_id.clone(),
                if s.recipient_agency_id.is_empty() {
                    s.rule_id.clone()
                } else {
                    String::new()
                },
            );
            let entry = by_recipient.entry(key).or_insert_with(|| s.clone());
            if s.state >= entry.state {
                let rule_id = if s.rule_id.is_empty() {
                    entry.rule_id.clone()
                } else {
                    s.rule_id.clone()
                };
                *entry = RecipientStatus { rule_id, ..s };
            }
        }
    }
    out.recipients = by_recipient.into_values().collect();
    Ok(out)
}
