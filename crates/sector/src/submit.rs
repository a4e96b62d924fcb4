//! Submit: authenticate, validate, stamp, publish, and answer only once JetStream stored it.

use std::{pin::Pin, sync::Arc};

use futures::Stream;
use henvis_bus::{STREAM_IN, inbound_subject};
use henvis_domain::{CaseId, CaseRecord, EventId, IdempotencyKey, MessageType};
use henvis_proto::henvis::broker::v1::{
    Envelope, GetStatusRequest, GetStatusResponse, InboxRequest, InboxResponse, Sender, SubmitRequest, SubmitResponse,
    referral_service_server::ReferralService,
};
use henvis_proto::henvis::events::v1::event::Kind;
use prost::Message;
use tonic::{Request, Response, Status, Streaming, metadata::MetadataMap};

use crate::{ApiError, Caller, Core, validate};

/// The message type that opens a case when submitted without a case id.
const OPENS_CASE: &str = "suspected_victim_reported";

/// The common ReferralService of a sector service.
pub struct Referrals(pub Arc<Core>);

pub(crate) fn sector_number(s: henvis_domain::Sector) -> i32 {
    use henvis_proto::henvis::broker::v1::Sector as Pb;
    (match s {
        henvis_domain::Sector::Police => Pb::Police,
        henvis_domain::Sector::Health => Pb::Health,
        henvis_domain::Sector::Social => Pb::Social,
        henvis_domain::Sector::Ngo => Pb::Ngo,
    }) as i32
}

impl Core {
    /// Identifies the caller and checks that its agency belongs to this service's sector.
    pub(crate) fn caller(&self, meta: &MetadataMap) -> Result<Caller, ApiError> {
        let caller = self.credentials.authenticate(meta)?;
        if caller.sector != self.profile.sector {
            return Err(ApiError::PermissionDenied(format!(
                "agency `{}` belongs to the {} sector; call the {} service",
                caller.agency, caller.sector, caller.sector
            )));
        }
        Ok(caller)
    }

    /// The whole Submit path. Nothing is published unless every check passed.
    pub(crate) async fn submit(&self, meta: &MetadataMap, req: SubmitRequest) -> Result<SubmitResponse, ApiError> {
        let caller = self.caller(meta)?;
        let key =
            IdempotencyKey::parse(&req.idempotency_key).map_err(|e| ApiError::field("idempotency_key", e.expected))?;
        let actor_ok = !req.actor_id.is_empty()
            && req.actor_id.len() <= 64
            && req
                .actor_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
        if !actor_ok {
            return Err(ApiError::field(
                "actor_id",
                "the acting person's opaque id: 1 to 64 characters of [A-Za-z0-9._@-]",
            ));
        }
        if let Some(s) = &req.sender {
            if !s.agency_id.is_empty() && s.agency_id != caller.agency.as_str() {
                return Err(ApiError::field(
                    "sender.agency_id",
                    format!(
                        "the authenticated caller `{}` or empty (the sender is stamped by henvis)",
                        caller.agency
                    ),
                ));
            }
            if s.sector != 0 && s.sector != sector_number(caller.sector) {
                return Err(ApiError::field(
                    "sender.sector",
                    format!("`{}` or unspecified", caller.sector),
                ));
            }
        }
        let event = req
            .event
            .ok_or_else(|| ApiError::field("event", "required: one henvis.events.v1.Event"))?;
        let encoded = event.encode_to_vec();
        if encoded.len() > self.max_event_bytes {
            return Err(ApiError::field(
                "event",
                format!("at most {} bytes encoded, got {}", self.max_event_bytes, encoded.len()),
            ));
        }
        let (mt, dynamic) = self.schema.decode_event(&encoded)?;
        if !self.profile.originates(mt.as_str()) {
            return Err(ApiError::PermissionDenied(format!(
                "event: the {} service does not accept `{mt}`; accepted: {}",
                self.profile.sector,
                self.profile.originates.join(", ")
            )));
        }
        self.schema.check_required(&dynamic)?;
        validate::references(&self.directory, &dynamic, "event")?;
        let (case_id, opens) = self.case_for(&req.case_id, &mt).await?;
        let opens = match (&event.kind, opens) {
            (Some(Kind::SuspectedVictimReported(r)), true) => Some(r.municipality_code.clone()),
            _ => None,
        };

        let event_id = EventId::new_now();
        let envelope = Envelope {
            event_id: event_id.to_string(),
            idempotency_key: key.as_str().to_owned(),
            message_type: mt.to_string(),
            sender: Some(Sender {
                agency_id: caller.agency.to_string(),
                sector: sector_number(caller.sector),
                actor_id: req.actor_id,
            }),
            case_id: case_id.to_string(),
            submitted_at: Some(std::time::SystemTime::now().into()),
            event: Some(event),
        };
        let msg_id = format!("{}:{}", caller.agency, key.as_str());
        let stored = self
            .bus
            .publish_stored(
                inbound_subject(self.profile.sector, &mt),
                &msg_id,
                envelope.encode_to_vec().into(),
            )
            .await?;
        if stored.duplicate {
            let original = self.bus.stored_payload(STREAM_IN, stored.sequence).await?;
            let original =
                Envelope::decode(original).map_err(|e| ApiError::Internal(format!("stored envelope: {e}")))?;
            tracing::info!(agency = %caller.agency, event_id = %original.event_id, "duplicate submit answered with the stored event");
            return Ok(SubmitResponse {
                event_id: original.event_id,
                case_id: original.case_id,
                duplicate: true,
            });
        }
        if let Some(municipality_code) = opens {
            // The stored event is the source of truth; the router derives the same record if
            // this write is lost. Writing it here lets the sender follow up at once.
            let record = CaseRecord {
                municipality_code,
                opened_by: caller.agency.clone(),
                opened_by_event: event_id.to_string(),
                guardian: None,
            };
            if let Err(e) = self.bus.create_case(&case_id, &record).await {
                tracing::warn!(case_id = %case_id, error = %e, "case record left to the router");
            }
        }
        tracing::info!(agency = %caller.agency, event_id = %event_id, case_id = %case_id, message_type = %mt, seq = stored.sequence, "event stored");
        Ok(SubmitResponse {
            event_id: event_id.to_string(),
            case_id: case_id.to_string(),
            duplicate: false,
        })
    }

    /// The case an event belongs to; a new one for an opening report without a case id.
    /// Returns whether the event opens the case.
    async fn case_for(&self, case_id: &str, mt: &MessageType) -> Result<(CaseId, bool), ApiError> {
        if case_id.is_empty() {
            if mt.as_str() != OPENS_CASE {
                return Err(ApiError::field(
                    "case_id",
                    format!("required for `{mt}`; only `{OPENS_CASE}` opens a new case"),
                ));
            }
            return Ok((CaseId::new_random(), true));
        }
        let id = CaseId::parse(case_id).map_err(|e| ApiError::field("case_id", e.expected))?;
        if self.bus.case(&id).await?.is_none() {
            return Err(ApiError::NotFound(format!(
                "case_id: no case `{id}`; open one with `{OPENS_CASE}` and no case id"
            )));
        }
        Ok((id, false))
    }
}

pub(crate) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl ReferralService for Referrals {
    async fn submit(&self, request: Request<SubmitRequest>) -> Result<Response<SubmitResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        Ok(Response::new(self.0.submit(&meta, req).await?))
    }

    type InboxStream = BoxStream<InboxResponse>;

    async fn inbox(&self, request: Request<Streaming<InboxRequest>>) -> Result<Response<Self::InboxStream>, Status> {
        let caller = self.0.caller(request.metadata())?;
        let stream = crate::inbox::open(self.0.clone(), caller, request.into_inner()).await?;
        Ok(Response::new(stream))
    }

    async fn get_status(&self, request: Request<GetStatusRequest>) -> Result<Response<GetStatusResponse>, Status> {
        let caller = self.0.caller(request.metadata())?;
        Ok(Response::new(
            crate::status::get(&self.0, &caller, &request.into_inner().event_id).await?,
        ))
    }
}
