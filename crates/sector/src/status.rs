//! The status of a submitted event, per intended recipient, folded from the status
//! records the router and the inboxes append under the sender's subject: read once
//! (GetStatus) or followed (SubscribeStatus: the status so far, then every change, with
//! heartbeats and a resume position).

use std::collections::BTreeMap;

use futures::StreamExt;
use henvis_bus::{STREAM_STATUS, status_filter, status_writer, status_writer_may_speak_for};
use henvis_domain::EventId;
use henvis_proto::henvis::broker::v1::{GetStatusResponse, Heartbeat, RecipientStatus, StatusUpdate, status_update};
use prost::Message;
use tonic::Status;

use crate::{ApiError, Caller, Core, submit::BoxStream};

/// Folds status records into the current status of one event.
#[derive(Default)]
struct Fold {
    routed: bool,
    by_recipient: BTreeMap<(String, String), RecipientStatus>,
}

impl Fold {
    /// Adds one record, written by `writer` (its subject's last token): entries a writer may
    /// not speak for (another agency's receipt) are ignored.
    fn add(&mut self, subject: &str, record: &[u8]) -> Result<(), ApiError> {
        let rec = GetStatusResponse::decode(record).map_err(|e| ApiError::Internal(format!("status record: {e}")))?;
        let writer = status_writer(subject).unwrap_or_default();
        self.routed |= rec.routed && writer == henvis_bus::ROUTER_WRITER;
        for s in rec
            .recipients
            .into_iter()
            .filter(|s| status_writer_may_speak_for(writer, &s.recipient_agency_id))
        {
            // withheld entries without a recipient are told apart by their rule
            let key = (
                s.recipient_agency_id.clone(),
                if s.recipient_agency_id.is_empty() {
                    s.rule_id.clone()
                } else {
                    String::new()
                },
            );
            let entry = self.by_recipient.entry(key).or_insert_with(|| s.clone());
            if supersedes(&s, entry) {
                let rule_id = if s.rule_id.is_empty() {
                    entry.rule_id.clone()
                } else {
                    s.rule_id.clone()
                };
                *entry = RecipientStatus { rule_id, ..s };
            }
        }
        Ok(())
    }

    fn status(&self, event_id: &str) -> GetStatusResponse {
        GetStatusResponse {
            event_id: event_id.to_owned(),
            routed: self.routed,
            recipients: self.by_recipient.values().cloned().collect(),
        }
    }
}

/// How far along a state is: the routing decision (stored or withheld), the recipient's
/// receipt, its answer (accepted, declined, completed).
fn stage(state: i32) -> u8 {
    use henvis_proto::henvis::broker::v1::DeliveryState as S;
    match S::try_from(state) {
        Ok(S::Received) => 1,
        Ok(S::Accepted | S::Declined | S::Completed) => 2,
        _ => 0,
    }
}

/// Whether `new` replaces `current` for one recipient: a later stage always does; within a
/// stage the later in time does (records of one event come in stream order, so a tie goes
/// to the later record). An answer given after another (ACCEPTED after DECLINED) shows;
/// a receipt never hides an answer.
fn supersedes(new: &RecipientStatus, current: &RecipientStatus) -> bool {
    let secs = |s: &RecipientStatus| s.at.as_ref().map(|t| (t.seconds, t.nanos));
    match stage(new.state).cmp(&stage(current.state)) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => secs(new) >= secs(current),
    }
}

/// The answer for an event the caller did not send, and for one that does not exist: the
/// same, so existence is not confirmed.
fn no_event(caller: &Caller, id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "event_id: no event `{id}` sent by `{}`; ask for the status of an event your agency submitted",
        caller.agency
    ))
}

/// The status records of `id` under the caller (every event has one from its Submit), with
/// their subjects.
async fn records(core: &Core, caller: &Caller, id: &str) -> Result<Vec<(String, bytes::Bytes)>, ApiError> {
    let records = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        core.bus
            .read_messages(STREAM_STATUS, &status_filter(&caller.agency, id)),
    )
    .await
    .map_err(|_| ApiError::Unavailable("status read timed out".into()))??;
    if records.is_empty() {
        return Err(no_event(caller, id));
    }
    Ok(records)
}

/// Reads the status of `event_id` as seen by its sender. Another agency's event is
/// NOT_FOUND, exactly like an unknown one: the subject is scoped to the caller.
pub(crate) async fn get(core: &Core, caller: &Caller, event_id: &str) -> Result<GetStatusResponse, ApiError> {
    let id = EventId::parse(event_id).map_err(|e| ApiError::field("event_id", e.expected))?;
    let records = records(core, caller, &id.to_string()).await?;
    let mut fold = Fold::default();
    for (subject, r) in records {
        fold.add(&subject, &r)?;
    }
    Ok(fold.status(&id.to_string()))
}

/// Follows the status of `event_id`: the status so far, then a new status on every change.
/// Each update carries its position; a client that reconnects with `resume_after` gets
/// only what changed after it (the fold itself always covers every record).
pub(crate) async fn subscribe(
    core: &Core,
    caller: &Caller,
    event_id: &str,
    resume_after: u64,
) -> Result<BoxStream<StatusUpdate>, ApiError> {
    let id = EventId::parse(event_id)
        .map_err(|e| ApiError::field("event_id", e.expected))?
        .to_string();
    let (stored, mut records) = core
        .bus
        .follow(STREAM_STATUS, &status_filter(&caller.agency, &id))
        .await?;
    // every event of the caller has a record from its Submit: none means not the caller's
    // event (or none at all), refused before anything is followed
    if stored == 0 {
        return Err(no_event(caller, &id));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<StatusUpdate, Status>>(16);
    let heartbeat_every = core.heartbeat;
    tokio::spawn(async move {
        let mut fold = Fold::default();
        let mut heartbeat = tokio::time::interval(heartbeat_every);
        heartbeat.tick().await;
        loop {
            tokio::select! {
                m = records.next() => {
                    let Some(Ok(m)) = m else { break };
                    let position = m.sequence;
                    if fold.add(&m.subject, &m.payload).is_err() {
                        continue;
                    }
                    // send once caught up with what was stored when the stream opened
                    let caught_up = m.caught_up;
                    // the sender's own "submitted" record says nothing yet: the first
                    // update is the router's decision
                    let nothing_yet = !fold.routed && fold.by_recipient.is_empty();
                    if position > resume_after && caught_up && !nothing_yet {
                        let u = StatusUpdate { position, kind: Some(status_update::Kind::Status(fold.status(&id))) };
                        if tx.send(Ok(u)).await.is_err() { break; }
                    }
                }
                _ = heartbeat.tick() => {
                    let hb = StatusUpdate { position: 0, kind: Some(status_update::Kind::Heartbeat(Heartbeat { at: Some(std::time::SystemTime::now().into()) })) };
                    if tx.send(Ok(hb)).await.is_err() { break; }
                }
            }
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

#[cfg(test)]
mod tests {
    use henvis_proto::henvis::broker::v1::DeliveryState;

    use super::*;

    fn record(recipient: &str, state: DeliveryState) -> Vec<u8> {
        GetStatusResponse {
            event_id: "e".into(),
            routed: true,
            recipients: vec![RecipientStatus {
                recipient_agency_id: recipient.into(),
                state: state as i32,
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn a_writer_speaks_only_for_itself_and_only_the_router_routes() {
        let mut fold = Fold::default();
        // the sender's own first record says nothing about routing
        fold.add("henvis.status.ngo-a.e.ngo-a", &record("", DeliveryState::Stored))
            .unwrap();
        assert!(!fold.routed);
        fold.add(
            "henvis.status.ngo-a.e.router",
            &record("kommune-101", DeliveryState::Stored),
        )
        .unwrap();
        // another agency forges the municipality's acceptance: ignored
        fold.add(
            "henvis.status.ngo-a.e.ngo-b",
            &record("kommune-101", DeliveryState::Accepted),
        )
        .unwrap();
        fold.add(
            "henvis.status.ngo-a.e.kommune-101",
            &record("kommune-101", DeliveryState::Received),
        )
        .unwrap();
        let s = fold.status("e");
        assert!(s.routed);
        let states: Vec<_> = s
            .recipients
            .iter()
            .filter(|r| !r.recipient_agency_id.is_empty())
            .map(|r| (r.recipient_agency_id.as_str(), r.state))
            .collect();
        assert_eq!(states, [("kommune-101", DeliveryState::Received as i32)]);
    }

    fn at(recipient: &str, state: DeliveryState, secs: i64) -> Vec<u8> {
        GetStatusResponse {
            event_id: "e".into(),
            routed: true,
            recipients: vec![RecipientStatus {
                recipient_agency_id: recipient.into(),
                state: state as i32,
                at: Some(prost_types::Timestamp {
                    seconds: secs,
                    nanos: 0,
                }),
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn a_later_answer_shows_and_a_receipt_never_hides_an_answer() {
        let subject = "henvis.status.ngo-a.e.kommune-101";
        let state = |records: &[Vec<u8>]| {
            let mut fold = Fold::default();
            fold.add(
                "henvis.status.ngo-a.e.router",
                &at("kommune-101", DeliveryState::Stored, 1),
            )
            .unwrap();
            for r in records {
                fold.add(subject, r).unwrap();
            }
            fold.status("e").recipients[0].state
        };
        let (received, declined, accepted) = (
            at("kommune-101", DeliveryState::Received, 5),
            at("kommune-101", DeliveryState::Declined, 10),
            at("kommune-101", DeliveryState::Accepted, 20),
        );
        assert_eq!(
            state(&[received.clone(), declined.clone(), accepted.clone()]),
            DeliveryState::Accepted as i32,
            "accepted after declining"
        );
        assert_eq!(
            state(&[received.clone(), accepted.clone(), declined.clone()]),
            DeliveryState::Accepted as i32,
            "an older answer read later does not win"
        );
        assert_eq!(
            state(&[
                accepted,
                declined.clone(),
                at("kommune-101", DeliveryState::Declined, 30)
            ]),
            DeliveryState::Declined as i32,
            "declined again later"
        );
        assert_eq!(
            state(&[declined, received]),
            DeliveryState::Declined as i32,
            "a receipt read after the answer"
        );
    }
}
