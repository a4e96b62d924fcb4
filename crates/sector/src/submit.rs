//! Submit: authenticate, validate, stamp, publish, and answer only once JetStream stored it.

use std::{pin::Pin, sync::Arc};

use futures::Stream;
use henvis_bus::{BusError, STREAM_IN, inbound_subject};
use henvis_domain::{CaseChange, CaseId, CaseRecord, EventId, IdempotencyKey, MessageType};
use henvis_policy::{GuardError, OPENING_TYPE};
use henvis_proto::henvis::broker::v1::{
    Envelope, GetCaseDecisionsRequest, GetCaseDecisionsResponse, GetStatusRequest, GetStatusResponse,
    GetSubjectAccessReportRequest, InboxRequest, InboxResponse, Sender, StatusUpdate, SubjectAccessReport,
    SubmitRequest, SubmitResponse, SubscribeStatusRequest, referral_service_server::ReferralService,
};
use henvis_proto::henvis::events::v1::{Event, event::Kind};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use henvis_runtime::refusals::Refusal;

use crate::{ApiError, Caller, Core};

/// The common ReferralService of a sector service.
pub struct Referrals(pub Arc<Core>);

impl Core {
    /// Identifies the caller from the principal its certificate names (put there by the
    /// TLS layer) and checks that its agency belongs to this service's sector.
    pub(crate) fn caller(&self, ext: &tonic::Extensions) -> Result<Caller, ApiError> {
        let principal = ext
            .get::<henvis_domain::Principal>()
            .ok_or(ApiError::Unauthenticated("no authenticated principal"))?;
        let caller = Caller::of(principal, &self.directory.current())?;
        if caller.sector != self.profile.sector {
            henvis_runtime::refusals::record(
                Refusal::WrongService,
                &principal.to_string(),
                "another sector's service",
            );
            return Err(ApiError::PermissionDenied(format!(
                "agency `{}` belongs to the {} sector; call the {} service",
                caller.agency, caller.sector, caller.sector
            )));
        }
        Ok(caller)
    }

    /// Submit, run to completion even if the caller goes away (deadline, dropped
    /// connection): an event stored must also be remembered under its idempotency key, or
    /// a late retry could store it twice.
    pub(crate) async fn submit_detached(
        self: Arc<Self>,
        ext: tonic::Extensions,
        req: SubmitRequest,
    ) -> Result<SubmitResponse, ApiError> {
        let caller = self.caller(&ext)?;
        // the task continues the call's span: the trace goes on into what Submit stores
        let done = tokio::spawn(tracing::Instrument::instrument(
            async move { self.submit(&caller, req).await },
            tracing::Span::current(),
        ));
        done.await
            .map_err(|e| ApiError::Internal(format!("submit task: {e}")))?
    }

    /// The whole Submit path: check (nothing is stored unless every check passed; a true
    /// retry is answered from its record), stamp (the pure plan of what is stored), store.
    pub(crate) async fn submit(&self, caller: &Caller, req: SubmitRequest) -> Result<SubmitResponse, ApiError> {
        let started = std::time::Instant::now();
        let result = self.submit_unmeasured(caller, req).await;
        henvis_runtime::metrics::record_submit(
            &self.profile.sector.to_string(),
            result.as_ref().map(|r| r.duplicate).map_err(ApiError::code),
            started.elapsed(),
        );
        result
    }

    async fn submit_unmeasured(&self, caller: &Caller, req: SubmitRequest) -> Result<SubmitResponse, ApiError> {
        let a = match self.check(caller, req).await? {
            Checked::Answered(r) => return Ok(r),
            Checked::Admitted(a) => *a,
        };
        let stamped = stamp(
            caller,
            &a.key,
            &a.mt,
            &a.case_id,
            &a.event_id,
            a.actor_id,
            a.event,
            std::time::SystemTime::now(),
        );
        self.store(caller, &a.key, &a.requested_case, stamped, a.change).await
    }

    /// Every check of a submission, in order: the key, who acts, a retry of a stored event
    /// (answered from its record), the claimed sender, the event's kind, size and fields,
    /// the case, the workflow guards and the references. Nothing is written, except what
    /// answering a true retry writes again (idempotently).
    async fn check(&self, caller: &Caller, req: SubmitRequest) -> Result<Checked, ApiError> {
        let key =
            IdempotencyKey::parse(&req.idempotency_key).map_err(|e| ApiError::field("idempotency_key", e.expected))?;
        // a person calling as themself acts as themself: their certificate names them
        let mut req = req;
        if let Some(person) = &caller.person {
            if req.actor_id.is_empty() {
                req.actor_id = person.to_string();
            } else if req.actor_id != person.as_str() {
                forged(caller, "actor_id names another person");
                return Err(ApiError::field(
                    "actor_id",
                    format!("the authenticated person `{person}` or empty"),
                ));
            }
        }
        henvis_domain::ActorId::parse(&req.actor_id).map_err(|e| ApiError::field("actor_id", e.expected))?;
        // a retry of a stored event, however late: the original answer, nothing new stored
        // (a different request under a used key is refused, never answered as a retry).
        // The named case is read meanwhile (one round trip for both); a retry ignores it.
        let named_case = CaseId::parse(&req.case_id).ok();
        let (submitted, prefetched) = tokio::join!(self.bus.submitted(caller.agency.as_str(), key.as_str()), async {
            match &named_case {
                Some(id) => self.bus.case(id).await,
                None => Ok(None),
            }
        });
        if let Some((stored, _)) = submitted? {
            let (envelope, change) = Self::decode_stored(&stored)?;
            same_request(req.event.as_ref(), &req.actor_id, &req.case_id, &envelope, &key)?;
            let opens_case = req.case_id.is_empty();
            return Ok(Checked::Answered(
                self.finish(caller, envelope, change, opens_case, true).await?,
            ));
        }
        if let Some(s) = &req.sender {
            if !s.agency_id.is_empty() && s.agency_id != caller.agency.as_str() {
                forged(caller, "sender.agency_id names another agency");
                return Err(ApiError::field(
                    "sender.agency_id",
                    format!(
                        "the authenticated caller `{}` or empty (the sender is stamped by henvis)",
                        caller.agency
                    ),
                ));
            }
            if s.sector != 0 && s.sector != henvis_convert::wire_sector(caller.sector) {
                forged(caller, "sender.sector names another sector");
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
        if henvis_domain::SYSTEM_TYPES.contains(&mt.as_str()) {
            return Err(ApiError::PermissionDenied(format!(
                "event: `{mt}` is emitted by henvis itself, never submitted"
            )));
        }
        if !self.profile.originates(mt.as_str()) {
            return Err(ApiError::PermissionDenied(format!(
                "event: the {} service does not accept `{mt}`; accepted: {}",
                self.profile.sector,
                self.profile.originates.join(", ")
            )));
        }
        self.schema
            .validate(&dynamic, std::time::SystemTime::now(), &self.directory.current())?;
        let prefetched = prefetched?.map(|c| c.record);
        let (case_id, existing) = self.case_for(caller, &req.case_id, &mt, prefetched).await?;
        let event_id = EventId::new_now();
        // workflow guards, against the case as it stands (a new case: nothing yet)
        let current = existing.unwrap_or_else(CaseRecord::new);
        henvis_policy::admit(&mt, &caller.agency, &current, &self.directory.current()).map_err(|e| {
            let who = caller.agency.to_string();
            match e {
                GuardError::NotParticipant => {
                    henvis_runtime::refusals::record(Refusal::Guard, &who, "not a participant of the named case");
                    no_case(&case_id)
                }
                GuardError::MissingStep(m) => ApiError::FailedPrecondition(m),
                GuardError::NotAllowed(m) => {
                    henvis_runtime::refusals::record(Refusal::Guard, &who, "workflow guard");
                    ApiError::PermissionDenied(m)
                }
            }
        })?;
        self.check_references(caller, &event, &case_id, &current).await?;
        let change = henvis_convert::case_change(&event, &event_id.to_string())?;
        Ok(Checked::Admitted(Box::new(Admitted {
            key,
            mt,
            case_id,
            event_id,
            actor_id: req.actor_id,
            event,
            change,
            requested_case: req.case_id,
        })))
    }

    /// Stores a stamped submission: the agency's share of IN, the event in IN (a duplicate
    /// within the window answered from the first attempt's record), the idempotency record
    /// and the sender's first status record, then the case change's answer.
    async fn store(
        &self,
        caller: &Caller,
        key: &IdempotencyKey,
        requested_case: &str,
        stamped: Stamped,
        change: CaseChange,
    ) -> Result<SubmitResponse, ApiError> {
        let Stamped {
            envelope,
            subject,
            msg_id,
        } = stamped;
        // sealed once with the case's key (an erased case refuses here, before anything is
        // stored): stored in IN and, below, in the idempotency record. A case this request
        // opens has a fresh id: its key is made while the agency's share is taken (neither
        // can refuse because of the other). Should the submission then be refused (share
        // used up, IN full), that key stays: keys are written once and only an erasure
        // removes one (docs/SECURITY.md), and a key of an id nobody was given opens nothing.
        let plaintext = envelope.encode_to_vec();
        let opening = requested_case.is_empty();
        let (encoded, has_quota) = if opening {
            let len = henvis_bus::Bus::sealed_len(&envelope.case_id, plaintext.len());
            let (sealed, quota) = tokio::join!(
                self.bus.seal_new_case(&envelope.case_id, &plaintext),
                self.bus.take_quota(&caller.agency, len)
            );
            (sealed?, quota?)
        } else {
            let sealed = self.bus.seal(&envelope.case_id, &plaintext).await?;
            let has_quota = self.bus.take_quota(&caller.agency, sealed.len()).await?;
            (sealed, has_quota)
        };
        // the agency's share of IN: one agency cannot fill it for everyone
        if !has_quota {
            tracing::warn!(agency = %caller.agency, "agency's share of the submitted-events stream used up; submission refused");
            self.bus
                .alert_stream_full(
                    self.profile.sector.as_str(),
                    henvis_bus::STREAM_QUOTA,
                    caller.agency.as_str(),
                )
                .await;
            return Err(ApiError::Full(format!(
                "agency `{}` has submitted its share of events for the retention period ({} units of up to {} KiB); nothing was stored, and other agencies are not affected: ask an administrator to raise HENVIS_AGENCY_QUOTA",
                caller.agency,
                self.agency_quota,
                henvis_bus::QUOTA_UNIT_BYTES / 1024
            )));
        }
        let stored = match self.bus.publish_stored(subject, &msg_id, encoded.clone()).await {
            Ok(s) => s,
            Err(BusError::Full(e)) => {
                // nothing old is evicted; administrators must know at once
                tracing::error!(agency = %caller.agency, "submitted-events stream full; submission refused");
                self.bus
                    .alert_stream_full(self.profile.sector.as_str(), STREAM_IN, caller.agency.as_str())
                    .await;
                return Err(BusError::Full(e).into());
            }
            Err(e) => return Err(e.into()),
        };
        if stored.duplicate {
            // the same key within the de-duplication window, whose record is not written
            // yet: by the attempt still in progress, or by the router once it routes the
            // event (should that attempt have failed). Answer with the stored event.
            let (original, change) = self.await_record(caller, key).await?;
            let actor = envelope
                .sender
                .as_ref()
                .map(|s| s.actor_id.as_str())
                .unwrap_or_default();
            same_request(envelope.event.as_ref(), actor, requested_case, &original, key)?;
            return self.finish(caller, original, change, opening, true).await;
        }
        // the idempotency record, and the sender's first status record (which is also how
        // GetStatus knows the event is the caller's before the router has routed it)
        let submitted = GetStatusResponse {
            event_id: envelope.event_id.clone(),
            routed: false,
            recipients: Vec::new(),
        };
        let status_id = format!("submitted:{}", envelope.event_id);
        // a case this event opens is remembered as the caller's alongside, so the caller
        // can add to it at once (a report naming a case that exists opens nothing)
        let opened = async {
            match &change {
                CaseChange::Opened { municipality_code } if opening => {
                    self.remember_opening(caller, &envelope, municipality_code).await
                }
                _ => Ok(()),
            }
        };
        let (remembered, status, opened) = tokio::join!(
            self.bus.remember_submitted(
                caller.agency.as_str(),
                key.as_str(),
                &envelope.event_id,
                &encoded,
                stored.sequence,
            ),
            self.bus.publish_stored(
                henvis_bus::status_subject(&caller.agency, &envelope.event_id, caller.agency.as_str()),
                &status_id,
                submitted.encode_to_vec().into(),
            ),
            opened
        );
        remembered?;
        status?;
        opened?;
        self.finish(caller, envelope, change, opening, false).await
    }

    /// Waits a little for the idempotency record of a duplicate; if it does not come, the
    /// caller is told to retry (with the same key, which is safe).
    async fn await_record(&self, caller: &Caller, key: &IdempotencyKey) -> Result<(Envelope, CaseChange), ApiError> {
        match read_within(DUPLICATE_RECORD_WAIT, || {
            self.bus.submitted(caller.agency.as_str(), key.as_str())
        })
        .await?
        {
            Some((stored, _)) => Self::decode_stored(&stored),
            None => Err(ApiError::Unavailable(
                "an earlier attempt with this idempotency key is still being stored".into(),
            )),
        }
    }

    /// A stored envelope (from its idempotency record) and the case change it makes.
    fn decode_stored(bytes: &[u8]) -> Result<(Envelope, CaseChange), ApiError> {
        let original = Envelope::decode(bytes).map_err(|e| ApiError::Internal(format!("stored envelope: {e}")))?;
        let change = match &original.event {
            Some(ev) => henvis_convert::case_change(ev, &original.event_id)?,
            None => CaseChange::None,
        };
        Ok((original, change))
    }

    /// Completes a Submit whose event is stored: applies and audits its case change.
    /// `opens_case`: the request named no case, so its event opened a new one.
    async fn finish(
        &self,
        caller: &Caller,
        envelope: Envelope,
        change: CaseChange,
        opens_case: bool,
        duplicate: bool,
    ) -> Result<SubmitResponse, ApiError> {
        if duplicate {
            tracing::info!(agency = %caller.agency, event_id = %envelope.event_id, "duplicate submit answered with the stored event");
        }
        // The case record changes before Submit answers: a consent withdrawal (or any other
        // change) acknowledged to its sender governs every submission acknowledged after it.
        // The router applies the same change idempotently if this write is lost.
        // Only the router writes case records, applying each change in the case's order of
        // events: an event stored after this one is decided with this change in force (a
        // consent withdrawal above all), whenever the router gets to it. Before answering,
        // Submit waits a little for the router to have applied it, so that what the answer
        // makes possible (the guardian's first consent after an appointment) is admitted at
        // once; an opening report instead lets its sender add to the case at once.
        match &change {
            CaseChange::None => {}
            // a first attempt remembered the opening alongside its idempotency record; a
            // retry writes it again (kept if stored)
            CaseChange::Opened { municipality_code } => {
                if duplicate && opens_case {
                    self.remember_opening(caller, &envelope, municipality_code).await?;
                }
            }
            _ => {
                let case = CaseId::parse(&envelope.case_id).map_err(|e| ApiError::Internal(e.to_string()))?;
                if !self.applied(&case, &change, &envelope.event_id).await? {
                    tracing::warn!(event_id = %envelope.event_id, case_id = %case, change = change.name(), "case change not yet applied by the router; answered anyway (it takes effect in the case's order)");
                }
            }
        }
        tracing::info!(agency = %caller.agency, event_id = %envelope.event_id, case_id = %envelope.case_id, message_type = %envelope.message_type, duplicate, "event stored");
        Ok(SubmitResponse {
            event_id: envelope.event_id,
            case_id: envelope.case_id,
            duplicate,
        })
    }

    /// Records that the caller opened `envelope`'s case (kept if recorded already).
    async fn remember_opening(
        &self,
        caller: &Caller,
        envelope: &Envelope,
        municipality_code: &str,
    ) -> Result<(), ApiError> {
        let case = CaseId::parse(&envelope.case_id).map_err(|e| ApiError::Internal(e.to_string()))?;
        let opening = henvis_bus::Opening {
            event_id: envelope.event_id.clone(),
            municipality_code: municipality_code.to_owned(),
        };
        Ok(self
            .bus
            .remember_opening(caller.agency.as_str(), &case, &opening)
            .await?)
    }

    /// Waits until the router has applied `change` of event `event_id` to the case record,
    /// at most [`CASE_CHANGE_WAIT`]; whether it has.
    async fn applied(&self, case: &CaseId, change: &CaseChange, event_id: &str) -> Result<bool, ApiError> {
        let deadline = tokio::time::Instant::now() + CASE_CHANGE_WAIT;
        let mut pause = std::time::Duration::from_millis(5);
        loop {
            if self
                .bus
                .case(case)
                .await?
                .is_some_and(|c| c.record.reflects(change, event_id))
            {
                return Ok(true);
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Ok(false);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(100));
        }
    }

    /// The case an event belongs to: a new id for an opening report without a case id,
    /// else the named case, which must exist (as the router recorded it, or as the caller
    /// opened it moments ago and the router has not routed yet).
    /// `prefetched`: the named case's record as just read, if it exists.
    async fn case_for(
        &self,
        caller: &Caller,
        case_id: &str,
        mt: &MessageType,
        prefetched: Option<CaseRecord>,
    ) -> Result<(CaseId, Option<CaseRecord>), ApiError> {
        if case_id.is_empty() {
            if mt.as_str() != OPENING_TYPE {
                return Err(ApiError::field(
                    "case_id",
                    format!("required for `{mt}`; only `{OPENING_TYPE}` opens a new case"),
                ));
            }
            return Ok((CaseId::new_random(), None));
        }
        let id = CaseId::parse(case_id).map_err(|e| ApiError::field("case_id", e.expected))?;
        if let Some(record) = prefetched {
            return Ok((id, Some(record)));
        }
        let opened = self.bus.opening(caller.agency.as_str(), &id).await?;
        if opened.is_none() {
            // a case opened moments ago by another agency (which told the caller its id)
            // exists once the router has routed its opening report: wait a little for it
            if let Some(c) = read_within(CASE_APPEAR_WAIT, || self.bus.case(&id)).await? {
                return Ok((id, Some(c.record)));
            }
        }
        match opened {
            Some(o) => {
                let mut record = CaseRecord::new();
                record.apply(
                    &CaseChange::Opened {
                        municipality_code: o.municipality_code,
                    },
                    &o.event_id,
                );
                record.add_participants([&caller.agency]);
                Ok((id, Some(record)))
            }
            None => Err(no_case(&id)),
        }
    }

    /// References inside the event must point at something the sender may name: a consent
    /// withdrawn must have been recorded in the case (and a recorded id not reused), a
    /// referral answered must have been delivered to the responder in this case. The
    /// refusal says only what the sender already knows.
    async fn check_references(
        &self,
        caller: &Caller,
        event: &Event,
        case_id: &CaseId,
        case: &CaseRecord,
    ) -> Result<(), ApiError> {
        henvis_convert::check_consent_references(event, case).map_err(|e| match e {
            henvis_convert::ReferenceError::Missing(m) => ApiError::NotFound(m),
            henvis_convert::ReferenceError::Reused(m) => ApiError::AlreadyExists(m),
        })?;
        match &event.kind {
            Some(Kind::ReferralResponse(r)) => {
                // the router marks a delivery moments after OUT stored it: an answer sent
                // the instant the referral arrived waits a little for its mark
                let delivered = read_within(DELIVERY_MARK_WAIT, || {
                    self.bus
                        .delivered_to(caller.agency.as_str(), &r.in_response_to_event_id)
                })
                .await?;
                if delivered.is_some_and(|d| d.case_id == case_id.to_string()) {
                    Ok(())
                } else {
                    Err(ApiError::NotFound(henvis_convert::referral_not_delivered(
                        &r.in_response_to_event_id,
                        &caller.agency,
                    )))
                }
            }
            _ => Ok(()),
        }
    }
}

/// Reads with `read` (at once, then every 50 ms) until it finds something or `wait` has
/// passed; what it found, if anything.
async fn read_within<T, Fut>(wait: std::time::Duration, mut read: impl FnMut() -> Fut) -> Result<Option<T>, BusError>
where
    Fut: std::future::Future<Output = Result<Option<T>, BusError>>,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let found = read().await?;
        if found.is_some() || tokio::time::Instant::now() >= deadline {
            return Ok(found);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// What the checks of a submission found.
enum Checked {
    /// A true retry of a stored event, answered from its record.
    Answered(SubmitResponse),
    /// A new submission every check passed.
    Admitted(Box<Admitted>),
}

/// A new submission every check passed, not stored yet.
struct Admitted {
    key: IdempotencyKey,
    mt: MessageType,
    case_id: CaseId,
    event_id: EventId,
    actor_id: String,
    event: Event,
    change: CaseChange,
    /// The case id the request named (empty for an opening report).
    requested_case: String,
}

/// A checked submission, stamped: what is stored and where.
#[derive(Debug)]
struct Stamped {
    /// The envelope stored in IN.
    envelope: Envelope,
    /// Its subject: the caller's sector, the type, the case.
    subject: String,
    /// Its message id, `<agency>:<idempotency key>` (JetStream de-duplicates on it).
    msg_id: String,
}

/// Stamps a checked event: the sender is the authenticated caller (never the request's
/// claim), the person is the one the certificate names, and the subject is the caller's
/// own sector's. No I/O.
#[allow(clippy::too_many_arguments)]
fn stamp(
    caller: &Caller,
    key: &IdempotencyKey,
    mt: &MessageType,
    case_id: &CaseId,
    event_id: &EventId,
    actor_id: String,
    event: Event,
    now: std::time::SystemTime,
) -> Stamped {
    Stamped {
        envelope: Envelope {
            event_id: event_id.to_string(),
            idempotency_key: key.as_str().to_owned(),
            message_type: mt.to_string(),
            sender: Some(Sender {
                agency_id: caller.agency.to_string(),
                sector: henvis_convert::wire_sector(caller.sector),
                actor_id,
                person_id: caller.person.as_ref().map(ToString::to_string).unwrap_or_default(),
            }),
            case_id: case_id.to_string(),
            submitted_at: Some(now.into()),
            event: Some(event),
        },
        subject: inbound_subject(caller.sector, mt, case_id),
        msg_id: format!("{}:{}", caller.agency, key.as_str()),
    }
}

/// The answer for a case that does not exist, and for one the caller takes no part in:
/// the same, so it does not confirm that the case exists.
fn no_case(id: &CaseId) -> ApiError {
    ApiError::NotFound(format!(
        "case_id: no case `{id}` you take part in; open one with `{OPENING_TYPE}` and no case id"
    ))
}

/// Records a body that claims another identity than the certificate proves.
fn forged(caller: &Caller, reason: &str) {
    let who = caller
        .person
        .as_ref()
        .map_or_else(|| caller.agency.to_string(), ToString::to_string);
    henvis_runtime::refusals::record(Refusal::ForgedIdentity, &who, reason);
}

/// Whether a request under a used idempotency key is a true retry of the stored one: the
/// same event, actor and case. Anything else is refused, so a client that reuses a key by
/// mistake does not silently lose its second referral.
fn same_request(
    event: Option<&Event>,
    actor_id: &str,
    case_id: &str,
    stored: &Envelope,
    key: &IdempotencyKey,
) -> Result<(), ApiError> {
    let actor = stored.sender.as_ref().map(|s| s.actor_id.as_str()).unwrap_or_default();
    let same = event == stored.event.as_ref() && actor_id == actor && (case_id.is_empty() || case_id == stored.case_id);
    if same {
        Ok(())
    } else {
        Err(ApiError::AlreadyExists(format!(
            "idempotency_key: `{}` was already used for a different request (event `{}`); the body differs — send a new key for a new event, or the identical request to retry",
            key.as_str(),
            stored.event_id
        )))
    }
}

/// How long a duplicate submit waits for the first attempt's idempotency record.
const DUPLICATE_RECORD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl ReferralService for Referrals {
    async fn submit(&self, request: Request<SubmitRequest>) -> Result<Response<SubmitResponse>, Status> {
        let (_, ext, req) = request.into_parts();
        Ok(Response::new(self.0.clone().submit_detached(ext, req).await?))
    }

    type InboxStream = BoxStream<InboxResponse>;

    async fn inbox(&self, request: Request<Streaming<InboxRequest>>) -> Result<Response<Self::InboxStream>, Status> {
        let caller = self.0.caller(request.extensions())?;
        let stream = crate::inbox::open(self.0.clone(), caller, request.into_inner()).await?;
        Ok(Response::new(stream))
    }

    async fn get_status(&self, request: Request<GetStatusRequest>) -> Result<Response<GetStatusResponse>, Status> {
        let caller = self.0.caller(request.extensions())?;
        Ok(Response::new(
            crate::status::get(&self.0, &caller, &request.into_inner().event_id).await?,
        ))
    }

    type SubscribeStatusStream = BoxStream<StatusUpdate>;

    async fn subscribe_status(
        &self,
        request: Request<SubscribeStatusRequest>,
    ) -> Result<Response<Self::SubscribeStatusStream>, Status> {
        let caller = self.0.caller(request.extensions())?;
        let req = request.into_inner();
        Ok(Response::new(
            crate::status::subscribe(&self.0, &caller, &req.event_id, req.resume_after).await?,
        ))
    }

    async fn get_case_decisions(
        &self,
        request: Request<GetCaseDecisionsRequest>,
    ) -> Result<Response<GetCaseDecisionsResponse>, Status> {
        let caller = self.0.caller(request.extensions())?;
        Ok(Response::new(
            crate::decisions::get(&self.0, &caller, &request.into_inner().case_id).await?,
        ))
    }

    async fn get_subject_access_report(
        &self,
        request: Request<GetSubjectAccessReportRequest>,
    ) -> Result<Response<SubjectAccessReport>, Status> {
        let caller = self.0.caller(request.extensions())?;
        Ok(Response::new(
            crate::decisions::report(&self.0, &caller, &request.into_inner().case_id).await?,
        ))
    }

    async fn list_guardian_cases(
        &self,
        request: Request<henvis_proto::henvis::broker::v1::ListGuardianCasesRequest>,
    ) -> Result<Response<henvis_proto::henvis::broker::v1::ListGuardianCasesResponse>, Status> {
        let caller = self.0.caller(request.extensions())?;
        Ok(Response::new(crate::decisions::guardian_cases(&self.0, &caller).await?))
    }

    async fn list_case_links(
        &self,
        request: Request<henvis_proto::henvis::broker::v1::ListCaseLinksRequest>,
    ) -> Result<Response<henvis_proto::henvis::broker::v1::ListCaseLinksResponse>, Status> {
        let caller = self.0.caller(request.extensions())?;
        Ok(Response::new(crate::decisions::links(&self.0, &caller).await?))
    }

    async fn answer_case_link(
        &self,
        request: Request<henvis_proto::henvis::broker::v1::AnswerCaseLinkRequest>,
    ) -> Result<Response<henvis_proto::henvis::broker::v1::CaseLink>, Status> {
        let caller = self.0.caller(request.extensions())?;
        Ok(Response::new(
            crate::decisions::answer_link(&self.0, &caller, request.into_inner()).await?,
        ))
    }
}
/// How long Submit waits for the router to apply its event's case change.
const CASE_CHANGE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long Submit waits for a named case that does not exist (yet) before refusing.
const CASE_APPEAR_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a referral response waits for the mark of the referral's delivery to the
/// responder (written just after the delivery is stored) before it is refused.
const DELIVERY_MARK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use henvis_domain::{AgencyId, PersonId, Sector};

    use super::*;

    #[test]
    fn a_submission_is_stamped_with_the_authenticated_caller_and_its_own_sector() {
        let caller = Caller {
            agency: AgencyId::parse("politi-fyn").unwrap(),
            sector: Sector::Police,
            person: Some(PersonId::parse("politi-fyn-kp1").unwrap()),
        };
        let key = IdempotencyKey::parse("k-1").unwrap();
        let mt = MessageType::parse("child_missing").unwrap();
        let case = CaseId::parse("0196f3a0-7b5c-7cc0-8000-000000000001").unwrap();
        let event_id = EventId::new_now();
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let s = stamp(
            &caller,
            &key,
            &mt,
            &case,
            &event_id,
            "politi-fyn-kp1".into(),
            Event::default(),
            at,
        );
        let sender = s.envelope.sender.as_ref().unwrap();
        assert_eq!(sender.agency_id, "politi-fyn");
        assert_eq!(sender.sector, henvis_convert::wire_sector(Sector::Police));
        assert_eq!(sender.person_id, "politi-fyn-kp1");
        assert_eq!(s.envelope.submitted_at.unwrap().seconds, 1_800_000_000);
        assert_eq!(s.subject, inbound_subject(Sector::Police, &mt, &case));
        assert_eq!(s.msg_id, "politi-fyn:k-1");
        assert_eq!(
            (s.envelope.case_id.as_str(), s.envelope.idempotency_key.as_str()),
            (case.to_string().as_str(), "k-1")
        );
    }

    #[test]
    fn only_a_true_retry_is_answered_from_the_stored_event() {
        let key = IdempotencyKey::parse("k-1").unwrap();
        let caller = Caller {
            agency: AgencyId::parse("ngo-redbarnet").unwrap(),
            sector: Sector::Ngo,
            person: None,
        };
        let mt = MessageType::parse("child_missing").unwrap();
        let case = CaseId::parse("0196f3a0-7b5c-7cc0-8000-000000000001").unwrap();
        let stored = stamp(
            &caller,
            &key,
            &mt,
            &case,
            &EventId::new_now(),
            "a".into(),
            Event::default(),
            std::time::SystemTime::now(),
        )
        .envelope;
        let case_id = case.to_string();
        assert!(same_request(Some(&Event::default()), "a", &case_id, &stored, &key).is_ok());
        assert!(
            same_request(Some(&Event::default()), "a", "", &stored, &key).is_ok(),
            "an opening's retry names no case"
        );
        for (actor, case) in [("b", case_id.as_str()), ("a", "0196f3a0-7b5c-7cc0-8000-000000000002")] {
            let e = same_request(Some(&Event::default()), actor, case, &stored, &key).unwrap_err();
            assert!(matches!(e, ApiError::AlreadyExists(_)), "{e:?}");
        }
    }
}
