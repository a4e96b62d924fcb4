//! The gRPC face of the admin service: each RPC checks that the caller's certificate names
//! an administrator listed in the directory, checks its request field by field, and calls
//! governance, simulation or replay.

use std::sync::Arc;

use henvis_domain::{
    AgencyId, CaseId, CaseRecord, DirectoryChange, DirectoryProposal, PersonId, Principal, Proposal, ProposalDecision,
    ProposalState,
};
use henvis_policy::RuleSet;
use henvis_proto::henvis::{
    admin::v1::{
        AdminAlertsRequest, AdminAlertsResponse, ApproveCaseErasureRequest, ApproveDirectoryChangeRequest,
        ApproveRuleSetRequest, AuditRecords, BreakGlassInfo, BreakGlassRequest, CaseAuditRequest,
        CaseErasure as WireErasure, DiffRuleSetsRequest, DiffRuleSetsResponse, DirectoryChange as WireChange,
        DirectoryChangeProposal, GetRuleSetRequest, ListCaseErasuresRequest, ListCaseErasuresResponse,
        ListDirectoryChangesRequest, ListDirectoryChangesResponse, ListRuleSetsRequest, ListRuleSetsResponse,
        NatsAuthorizationRequest, NatsAuthorizationResponse, ProposeCaseErasureRequest, ProposeDirectoryChangeRequest,
        ProposeRollbackRequest, ProposeRuleSetRequest, RejectCaseErasureRequest, RejectDirectoryChangeRequest,
        RejectRuleSetRequest, ReviewBreakGlassRequest, RuleChange, RuleSetRef, RuleSetState, RuleSetVersion,
        SimulateRequest, SimulateResponse, SimulatedRecipient, StatsRequest, StatsTable, SubjectAccessReportRequest,
        VerifyAuditRequest, VerifyAuditResponse, WhatIfCount, WhatIfDelivery, WhatIfRequest, WhatIfResponse,
        WhoAmIRequest, WhoAmIResponse, admin_service_server::AdminService, directory_change as wire_change,
        rule_set_ref,
    },
    broker::v1::{Envelope, Sender, SubjectAccessReport},
    events::v1::Event,
};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::{
    Admin,
    governance::{optional_text, required_text},
    whatif,
};

/// The admin API over the shared state.
pub struct AdminApi(pub Arc<Admin>);

fn ts(secs: i64) -> Option<prost_types::Timestamp> {
    (secs > 0).then_some(prost_types::Timestamp {
        seconds: secs,
        nanos: 0,
    })
}

fn state(s: ProposalState) -> RuleSetState {
    match s {
        ProposalState::Proposed => RuleSetState::Proposed,
        ProposalState::Live => RuleSetState::Live,
        ProposalState::Superseded => RuleSetState::Superseded,
        ProposalState::Rejected => RuleSetState::Rejected,
    }
}

/// The wire form of a proposal; the text only when asked for.
fn version(p: &Proposal, live: Option<u64>, with_text: bool) -> RuleSetVersion {
    let mut v = RuleSetVersion {
        proposal_id: p.id,
        rule_set_version: p.rule_set_version.clone(),
        sha256: p.sha256.clone(),
        state: state(p.state(live)) as i32,
        proposed_by: p.proposed_by.to_string(),
        proposed_at: ts(p.proposed_at),
        note: p.note.clone(),
        rollback_of: p.rollback_of.unwrap_or(0),
        tests_passed: u32::try_from(p.tests.passed).unwrap_or(u32::MAX),
        tested_at: ts(p.tests.at),
        file: p.file.clone(),
        text: if with_text { p.text.clone() } else { String::new() },
        ..Default::default()
    };
    match &p.decision {
        Some(ProposalDecision::Approved { by, at, break_glass }) => {
            v.approved_by = by.to_string();
            v.approved_at = ts(*at);
            v.break_glass = break_glass.as_ref().map(|g| BreakGlassInfo {
                reason: g.reason.clone(),
                reviewed: g.review.is_some(),
                reviewed_by: g.review.as_ref().map(|r| r.by.to_string()).unwrap_or_default(),
                reviewed_at: g.review.as_ref().and_then(|r| ts(r.at)),
                review_note: g.review.as_ref().map(|r| r.note.clone()).unwrap_or_default(),
            });
        }
        Some(ProposalDecision::Rejected { by, at, reason }) => {
            v.rejected_by = by.to_string();
            v.rejected_at = ts(*at);
            v.rejection_reason = reason.clone();
        }
        None => {}
    }
    v
}

impl AdminApi {
    fn caller<T>(&self, req: &Request<T>) -> Result<PersonId, Status> {
        let p = req
            .extensions()
            .get::<Principal>()
            .ok_or_else(|| Status::unauthenticated("no authenticated principal"))?;
        self.0.administrator(p)
    }

    /// The rule set a reference names (default: the live set), validated and tested.
    async fn rule_set(&self, field: &str, r: Option<&RuleSetRef>) -> Result<RuleSet, Status> {
        match r.and_then(|r| r.r#ref.as_ref()) {
            None | Some(rule_set_ref::Ref::Live(_)) => {
                let (file, text) = self.0.live_text().await?;
                RuleSet::from_toml(&file, &text, &self.0.schema, &self.0.directory.current())
                    .map_err(|e| Status::failed_precondition(format!("the live rule set no longer validates: {e}")))
            }
            Some(rule_set_ref::Ref::ProposalId(id)) => {
                let p = self
                    .0
                    .proposal(*id)
                    .await
                    .map_err(|e| Status::new(e.code(), format!("`{field}.proposal_id`: {}", e.message())))?;
                self.0.check(&p.record.file, &p.record.text)
            }
            Some(rule_set_ref::Ref::Text(t)) => self.0.check(&format!("{field}.text"), t),
        }
    }
}

/// A required proposal number.
fn proposal_id(id: u64) -> Result<u64, Status> {
    if id == 0 {
        return Err(Status::invalid_argument(
            "`proposal_id`: a proposal number (1 or more) expected; `henvis admin list` shows them",
        ));
    }
    Ok(id)
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn who_am_i(&self, req: Request<WhoAmIRequest>) -> Result<Response<WhoAmIResponse>, Status> {
        let me = self.caller(&req)?;
        let all = self.0.proposals().await?;
        let count = |f: &dyn Fn(&Proposal) -> bool| {
            u32::try_from(all.iter().filter(|v| f(&v.record)).count()).unwrap_or(u32::MAX)
        };
        Ok(Response::new(WhoAmIResponse {
            principal: Principal::Admin(me.clone()).uri(),
            admin_id: me.to_string(),
            pending_proposals: count(&|p| p.decision.is_none()),
            unreviewed_break_glass: count(&|p| p.awaits_review()),
        }))
    }

    async fn propose_rule_set(&self, req: Request<ProposeRuleSetRequest>) -> Result<Response<RuleSetVersion>, Status> {
        let me = self.caller(&req)?;
        let r = req.into_inner();
        if r.text.trim().is_empty() {
            return Err(Status::invalid_argument(
                "`text`: the rule file's content (TOML) expected",
            ));
        }
        let file = if r.file.trim().is_empty() {
            "proposed.toml".to_owned()
        } else {
            optional_text("file", &r.file)?
        };
        let note = optional_text("note", &r.note)?;
        let (p, live) = self.0.propose(&me, &file, &r.text, &note, None).await?;
        Ok(Response::new(version(&p, live, false)))
    }

    async fn propose_rollback(&self, req: Request<ProposeRollbackRequest>) -> Result<Response<RuleSetVersion>, Status> {
        let me = self.caller(&req)?;
        let r = req.into_inner();
        let note = optional_text("note", &r.note)?;
        let (p, live) = self.0.rollback(&me, proposal_id(r.proposal_id)?, &note).await?;
        Ok(Response::new(version(&p, live, false)))
    }

    async fn approve_rule_set(&self, req: Request<ApproveRuleSetRequest>) -> Result<Response<RuleSetVersion>, Status> {
        let me = self.caller(&req)?;
        let id = proposal_id(req.get_ref().proposal_id)?;
        let (p, live) = self.0.approve(&me, id, None).await?;
        Ok(Response::new(version(&p, live, false)))
    }

    async fn reject_rule_set(&self, req: Request<RejectRuleSetRequest>) -> Result<Response<RuleSetVersion>, Status> {
        let me = self.caller(&req)?;
        let r = req.into_inner();
        let id = proposal_id(r.proposal_id)?;
        let reason = required_text("reason", &r.reason, "a reason for the rejection")?;
        let p = self.0.reject(&me, id, reason).await?;
        // a rejected proposal's state does not depend on which one is live
        Ok(Response::new(version(&p, None, false)))
    }

    async fn break_glass(&self, req: Request<BreakGlassRequest>) -> Result<Response<RuleSetVersion>, Status> {
        let me = self.caller(&req)?;
        let r = req.into_inner();
        let id = proposal_id(r.proposal_id)?;
        let reason = required_text(
            "reason",
            &r.reason,
            "a reason why this cannot wait for a second administrator",
        )?;
        let (p, live) = self.0.approve(&me, id, Some(reason)).await?;
        Ok(Response::new(version(&p, live, false)))
    }

    async fn review_break_glass(
        &self,
        req: Request<ReviewBreakGlassRequest>,
    ) -> Result<Response<RuleSetVersion>, Status> {
        let me = self.caller(&req)?;
        let r = req.into_inner();
        let id = proposal_id(r.proposal_id)?;
        let note = required_text("note", &r.note, "what the review found")?;
        let p = self.0.review(&me, id, note).await?;
        let live = self.0.live().await?.map(|l| l.id);
        Ok(Response::new(version(&p, live, false)))
    }

    async fn list_rule_sets(
        &self,
        req: Request<ListRuleSetsRequest>,
    ) -> Result<Response<ListRuleSetsResponse>, Status> {
        self.caller(&req)?;
        let all = self.0.proposals().await?;
        let live = henvis_domain::live_of(all.iter().map(|v| &v.record));
        let live_id = live.map(|l| l.id);
        let live_version = match live {
            Some(l) => l.rule_set_version.clone(),
            None => {
                let (file, text) = self.0.live_text().await?;
                RuleSet::from_toml(&file, &text, &self.0.schema, &self.0.directory.current())
                    .map(|r| r.version().to_owned())
                    .unwrap_or_default()
            }
        };
        Ok(Response::new(ListRuleSetsResponse {
            versions: all.iter().rev().map(|v| version(&v.record, live_id, false)).collect(),
            live_proposal_id: live_id.unwrap_or(0),
            live_rule_set_version: live_version,
        }))
    }

    async fn get_rule_set(&self, req: Request<GetRuleSetRequest>) -> Result<Response<RuleSetVersion>, Status> {
        self.caller(&req)?;
        let live = self.0.live().await?;
        let live_id = live.as_ref().map(|l| l.id);
        match req.get_ref().proposal_id {
            0 => match live {
                Some(l) => Ok(Response::new(version(&l, live_id, true))),
                None => {
                    // the shipped (or pre-governance) set: no proposal behind it
                    let (file, text) = self.0.live_text().await?;
                    let rules =
                        RuleSet::from_toml(&file, &text, &self.0.schema, &self.0.directory.current()).map_err(|e| {
                            Status::failed_precondition(format!("the live rule set no longer validates: {e}"))
                        })?;
                    Ok(Response::new(RuleSetVersion {
                        rule_set_version: rules.version().to_owned(),
                        sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes())),
                        state: RuleSetState::Live as i32,
                        tests_passed: u32::try_from(rules.test_count()).unwrap_or(u32::MAX),
                        file,
                        text,
                        ..Default::default()
                    }))
                }
            },
            id => Ok(Response::new(version(
                &self.0.proposal(id).await?.record,
                live_id,
                true,
            ))),
        }
    }

    async fn diff_rule_sets(
        &self,
        req: Request<DiffRuleSetsRequest>,
    ) -> Result<Response<DiffRuleSetsResponse>, Status> {
        self.caller(&req)?;
        let r = req.into_inner();
        let from = self.rule_set("from", r.from.as_ref()).await?;
        let to = self.rule_set("to", r.to.as_ref()).await?;
        Ok(Response::new(DiffRuleSetsResponse {
            from_version: from.version().to_owned(),
            to_version: to.version().to_owned(),
            changes: henvis_policy::diff(&from, &to)
                .into_iter()
                .map(|c| RuleChange {
                    message_type: c.message_type,
                    recipient: c.recipient,
                    rule_id: c.rule_id,
                    change: c.change.as_str().to_owned(),
                    classes: c.classes.iter().map(|c| c.as_str().to_owned()).collect(),
                    before: c.before,
                    after: c.after,
                })
                .collect(),
        }))
    }

    async fn simulate(&self, req: Request<SimulateRequest>) -> Result<Response<SimulateResponse>, Status> {
        self.caller(&req)?;
        let r = req.into_inner();
        let rules = self.rule_set("rules", r.rules.as_ref()).await?;
        let schema = &self.0.schema;
        let directory = &*self.0.directory.current();
        // the event as a client would send it
        let mut de = serde_json::Deserializer::from_str(&r.event_json);
        let dynamic = prost_reflect::DynamicMessage::deserialize(schema.event_descriptor().clone(), &mut de)
            .map_err(|e| {
                Status::invalid_argument(format!(
                    "`event_json`: the JSON form of henvis.events.v1.Event expected, e.g. {{\"childMissing\": {{…}}}}: {e}"
                ))
            })?;
        schema
            .validate(&dynamic, std::time::SystemTime::now(), directory)
            .map_err(|e| Status::invalid_argument(format!("`event_json.{}`: {} expected", e.field, e.expected)))?;
        let event = Event::decode(dynamic.encode_to_vec().as_slice())
            .map_err(|e| Status::invalid_argument(format!("`event_json`: {e}")))?;
        let mt = schema
            .message_type_of(&dynamic)
            .map_err(|e| Status::invalid_argument(format!("`event_json`: {e}")))?;
        // what Submit refuses before anything is stored, refused here alike
        if henvis_domain::SYSTEM_TYPES.contains(&mt.as_str()) {
            return Err(Status::failed_precondition(format!(
                "Submit would refuse it: `{mt}` is emitted by henvis itself, never submitted"
            )));
        }
        let sender = AgencyId::parse(&r.sender_agency_id)
            .map_err(|e| Status::invalid_argument(format!("`sender_agency_id`: {e}")))?;
        let sector = directory.agency(&sender).map(|a| a.sector).ok_or_else(|| {
            Status::invalid_argument(format!("`sender_agency_id`: `{sender}` is not in the directory"))
        })?;
        let (case_id, before) = match (r.case_id.trim(), r.case_json.trim()) {
            ("", "") => (uuid::Uuid::now_v7().to_string(), None),
            (id, "") => {
                let id = CaseId::parse(id).map_err(|e| Status::invalid_argument(format!("`case_id`: {e}")))?;
                let record = self
                    .0
                    .bus
                    .case(&id)
                    .await
                    .map_err(|e| Status::unavailable(format!("case records unavailable; try again: {e}")))?
                    .ok_or_else(|| Status::not_found(format!("`case_id`: no case `{id}`")))?;
                (id.to_string(), Some(record.record))
            }
            ("", json) => {
                let record: CaseRecord = serde_json::from_str(json).map_err(|e| {
                    Status::invalid_argument(format!("`case_json`: a case record as JSON expected: {e}"))
                })?;
                (uuid::Uuid::now_v7().to_string(), Some(record))
            }
            _ => {
                return Err(Status::invalid_argument(
                    "`case_id`, `case_json`: give one of them, or neither for an event that opens a case",
                ));
            }
        };
        // a referral response names its referral's sender as Submit and the router find it:
        // the answered event's delivery mark (or as the administrator names it)
        let mut unanswerable = None;
        let referral_sender = match (r.referral_sender_agency_id.trim(), event.kind.as_ref()) {
            ("", Some(henvis_proto::henvis::events::v1::event::Kind::ReferralResponse(rr))) => {
                let mark = self
                    .0
                    .bus
                    .delivered_to(sender.as_str(), &rr.in_response_to_event_id)
                    .await
                    .map_err(|e| Status::unavailable(format!("delivery marks unavailable; try again: {e}")))?
                    .filter(|m| m.case_id == case_id);
                let found = mark.and_then(|m| AgencyId::parse(&m.sender).ok());
                if found.is_none() {
                    unanswerable = Some(henvis_convert::referral_not_delivered(
                        &rr.in_response_to_event_id,
                        &sender,
                    ));
                }
                found
            }
            ("", _) => None,
            (s, _) => Some(
                AgencyId::parse(s)
                    .map_err(|e| Status::invalid_argument(format!("`referral_sender_agency_id`: {e}")))?,
            ),
        };
        let now = crate::now();
        let env = Envelope {
            event_id: uuid::Uuid::now_v7().to_string(),
            idempotency_key: String::new(),
            message_type: mt.to_string(),
            sender: Some(Sender {
                agency_id: sender.to_string(),
                sector: henvis_convert::wire_sector(sector),
                actor_id: "simulation".into(),
                person_id: String::new(),
            }),
            case_id,
            submitted_at: ts(now),
            event: Some(event),
        };
        // in Submit's order: the workflow guards (the router's), then the references
        let sim = henvis_router::simulate(schema, directory, &rules, &env, before.as_ref(), referral_sender)
            .map_err(|e| Status::failed_precondition(format!("the router would not route this event: {e}")))?;
        let case_now = before.unwrap_or_default();
        henvis_convert::check_consent_references(env.event.as_ref().unwrap_or(&Event::default()), &case_now).map_err(
            |e| {
                let (henvis_convert::ReferenceError::Missing(m) | henvis_convert::ReferenceError::Reused(m)) = e;
                Status::failed_precondition(format!("Submit would refuse it: {m}"))
            },
        )?;
        if let Some(m) = unanswerable {
            return Err(Status::failed_precondition(format!(
                "Submit would refuse it: {m} (or name the referral's sender with `referral_sender_agency_id` to simulate an answer to it)"
            )));
        }
        let mut recipients: Vec<SimulatedRecipient> = sim
            .deliveries
            .iter()
            .map(|d| SimulatedRecipient {
                agency_id: d.agency.to_string(),
                outcome: "delivered".into(),
                granted_classes: d.granted.iter().map(|c| c.as_str().to_owned()).collect(),
                withheld_classes: d.withheld.iter().map(|c| c.as_str().to_owned()).collect(),
                rule_ids: d.rule_ids.clone(),
                legal_bases: d.legal_bases.clone(),
                consent_ids: d.consent_ids.clone(),
                alert: d.alert.clone().unwrap_or_default(),
                ..Default::default()
            })
            .collect();
        recipients.extend(sim.decision.withheld.iter().map(|w| SimulatedRecipient {
            agency_id: w.recipient.as_ref().map(ToString::to_string).unwrap_or_default(),
            outcome: "withheld".into(),
            rule_ids: vec![w.rule_id.clone()],
            reason: w.reason.code().to_owned(),
            explanation: w.reason.describe().to_owned(),
            ..Default::default()
        }));
        Ok(Response::new(SimulateResponse {
            rule_set_version: sim.decision.rule_set_version,
            case_change: sim.case_change.to_owned(),
            recipients,
        }))
    }

    async fn what_if(&self, req: Request<WhatIfRequest>) -> Result<Response<WhatIfResponse>, Status> {
        self.caller(&req)?;
        let r = req.into_inner();
        if r.candidate.as_ref().and_then(|c| c.r#ref.as_ref()).is_none() {
            return Err(Status::invalid_argument(
                "`candidate`: a proposal number or a rule file's text expected",
            ));
        }
        if r.days > 366 {
            return Err(Status::invalid_argument(
                "`days`: 1 to 366 expected (0: the default, 7)",
            ));
        }
        let days = if r.days == 0 { 7 } else { r.days };
        let max_items = if r.max_items == 0 { 1000 } else { r.max_items.min(5000) } as usize;
        let offset = r.offset as usize;
        let live = self.rule_set("live", None).await?;
        let candidate = self.rule_set("candidate", r.candidate.as_ref()).await?;
        let replay = self.0.what_if(&live, &candidate, days).await?;
        let items = |v: &[whatif::Item]| -> Vec<WhatIfDelivery> {
            v.iter()
                .skip(offset)
                .take(max_items)
                .map(|i| WhatIfDelivery {
                    event_id: i.event_id.clone(),
                    case_id: i.case_id.clone(),
                    message_type: i.message_type.clone(),
                    recipient_agency_id: i.recipient.clone(),
                    rule_ids: i.rule_ids.clone(),
                    classes: i.classes.iter().map(|c| c.as_str().to_owned()).collect(),
                })
                .collect()
        };
        let total = |v: &[whatif::Item]| u32::try_from(v.len()).unwrap_or(u32::MAX);
        Ok(Response::new(WhatIfResponse {
            live_version: live.version().to_owned(),
            candidate_version: candidate.version().to_owned(),
            replayed: replay.replayed,
            skipped: replay.skipped,
            differs_from_record: replay.differs_from_record,
            gained: items(&replay.gained),
            lost: items(&replay.lost),
            classes_gained: items(&replay.classes_gained),
            classes_lost: items(&replay.classes_lost),
            counts: replay
                .counts
                .iter()
                .map(|((mt, agency, rule), (g, l))| WhatIfCount {
                    message_type: mt.clone(),
                    recipient_agency_id: agency.clone(),
                    rule_id: rule.clone(),
                    gained: *g,
                    lost: *l,
                })
                .collect(),
            gained_total: total(&replay.gained),
            lost_total: total(&replay.lost),
            classes_gained_total: total(&replay.classes_gained),
            classes_lost_total: total(&replay.classes_lost),
        }))
    }

    async fn propose_directory_change(
        &self,
        req: Request<ProposeDirectoryChangeRequest>,
    ) -> Result<Response<DirectoryChangeProposal>, Status> {
        let me = self.caller(&req)?;
        let r = req.into_inner();
        let note = optional_text("note", &r.note)?;
        let changes = r
            .changes
            .iter()
            .enumerate()
            .map(|(i, c)| directory_change(i, c))
            .collect::<Result<Vec<_>, _>>()?;
        let p = self.0.propose_directory(&me, changes, &note).await?;
        Ok(Response::new(directory_proposal(&p)))
    }

    async fn approve_directory_change(
        &self,
        req: Request<ApproveDirectoryChangeRequest>,
    ) -> Result<Response<DirectoryChangeProposal>, Status> {
        let me = self.caller(&req)?;
        let id = proposal_id(req.get_ref().proposal_id)?;
        let p = self.0.approve_directory(&me, id).await?;
        Ok(Response::new(directory_proposal(&p)))
    }

    async fn reject_directory_change(
        &self,
        req: Request<RejectDirectoryChangeRequest>,
    ) -> Result<Response<DirectoryChangeProposal>, Status> {
        let me = self.caller(&req)?;
        let r = req.into_inner();
        let id = proposal_id(r.proposal_id)?;
        let reason = required_text("reason", &r.reason, "a reason for the rejection")?;
        let p = self.0.reject_directory(&me, id, reason).await?;
        Ok(Response::new(directory_proposal(&p)))
    }

    async fn list_directory_changes(
        &self,
        req: Request<ListDirectoryChangesRequest>,
    ) -> Result<Response<ListDirectoryChangesResponse>, Status> {
        self.caller(&req)?;
        let all = self.0.directory_proposals().await?;
        Ok(Response::new(ListDirectoryChangesResponse {
            proposals: all.iter().rev().map(|v| directory_proposal(&v.record)).collect(),
        }))
    }

    async fn nats_authorization(
        &self,
        req: Request<NatsAuthorizationRequest>,
    ) -> Result<Response<NatsAuthorizationResponse>, Status> {
        self.caller(&req)?;
        Ok(Response::new(NatsAuthorizationResponse {
            config: henvis_bus::nats_authorization(&self.0.directory.current()),
        }))
    }

    async fn verify_audit(&self, req: Request<VerifyAuditRequest>) -> Result<Response<VerifyAuditResponse>, Status> {
        self.caller(&req)?;
        let trusted = req
            .get_ref()
            .trusted_checkpoints
            .iter()
            .enumerate()
            .map(|(i, t)| {
                serde_json::from_str(t).map_err(|e| {
                    Status::invalid_argument(format!(
                        "`trusted_checkpoints[{i}]`: a checkpoint as JSON (an earlier answer's `latest_checkpoint`) expected: {e}"
                    ))
                })
            })
            .collect::<Result<Vec<henvis_domain::Checkpoint>, _>>()?;
        let (v, latest, completeness) = self.0.verify_audit(&trusted, req.get_ref().completeness).await?;
        let (seq, at) = v.first_break.as_ref().map_or((0, 0), crate::verify::location);
        let finding = match &v.first_break {
            Some(b) => b.to_string(),
            None => format!(
                "intact: {} audit records, {} chained ({} still to chain), {} signed checkpoint(s) verified{}",
                v.records,
                v.links,
                v.unchained_tail,
                v.checkpoints,
                if v.expired > 0 {
                    format!(
                        "; the oldest {} links expired under the audit's retention, as old checkpoints allow",
                        v.expired
                    )
                } else {
                    String::new()
                }
            ),
        };
        Ok(Response::new(VerifyAuditResponse {
            intact: v.first_break.is_none(),
            finding,
            records: v.records,
            links: v.links,
            unchained_tail: v.unchained_tail,
            checkpoints: v.checkpoints,
            break_audit_seq: seq,
            break_at: ts(at),
            latest_checkpoint: latest
                .map(|c| serde_json::to_string(&c).unwrap_or_default())
                .unwrap_or_default(),
            completeness: completeness.map(|c| henvis_proto::henvis::admin::v1::Completeness {
                events_decided: c.events_decided,
                deliveries: c.deliveries,
                without_outcome: c.without_outcome,
                without_decision: c.without_decision,
                decided_more_than_once: c.decided_more_than_once,
                alert_steps: c.alert_steps,
                alert_steps_without_record: c.alert_steps_without_record,
                governance_steps: c.governance_steps,
                governance_steps_without_record: c.governance_steps_without_record,
            }),
        }))
    }

    async fn case_audit(&self, req: Request<CaseAuditRequest>) -> Result<Response<AuditRecords>, Status> {
        self.caller(&req)?;
        let case =
            CaseId::parse(&req.get_ref().case_id).map_err(|e| Status::invalid_argument(format!("`case_id`: {e}")))?;
        let records = self
            .0
            .bus
            .read_subject(henvis_bus::STREAM_AUDIT, &henvis_bus::audit_case_filter(&case))
            .await
            .map_err(|e| Status::unavailable(format!("the audit is unavailable; try again: {e}")))?;
        Ok(Response::new(AuditRecords {
            records: records
                .iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect(),
        }))
    }

    async fn stats(&self, req: Request<StatsRequest>) -> Result<Response<StatsTable>, Status> {
        self.caller(&req)?;
        let r = req.get_ref();
        Ok(Response::new(henvis_convert::stats_to_wire(
            &self.0.stats(&r.by, r.threshold).await?,
        )))
    }

    async fn subject_access_report(
        &self,
        req: Request<SubjectAccessReportRequest>,
    ) -> Result<Response<SubjectAccessReport>, Status> {
        let admin = self.caller(&req)?;
        let case =
            CaseId::parse(&req.get_ref().case_id).map_err(|e| Status::invalid_argument(format!("`case_id`: {e}")))?;
        Ok(Response::new(henvis_convert::report_to_wire(
            &self.0.subject_access_report(&admin, &case).await?,
        )))
    }

    async fn propose_case_erasure(
        &self,
        req: Request<ProposeCaseErasureRequest>,
    ) -> Result<Response<WireErasure>, Status> {
        let me = self.caller(&req)?;
        let r = req.into_inner();
        let case = CaseId::parse(&r.case_id).map_err(|e| Status::invalid_argument(format!("`case_id`: {e}")))?;
        let reason = required_text("reason", &r.reason, "a reason for the erasure")?;
        let hold = optional_text("police_hold_override", &r.police_hold_override)?;
        let e = self
            .0
            .propose_erasure(&me, &case, reason, (!hold.is_empty()).then_some(hold))
            .await?;
        Ok(Response::new(erasure(&e)))
    }

    async fn approve_case_erasure(
        &self,
        req: Request<ApproveCaseErasureRequest>,
    ) -> Result<Response<WireErasure>, Status> {
        let me = self.caller(&req)?;
        let e = self.0.approve_erasure(&me, req.get_ref().erasure_id).await?;
        Ok(Response::new(erasure(&e)))
    }

    async fn reject_case_erasure(
        &self,
        req: Request<RejectCaseErasureRequest>,
    ) -> Result<Response<WireErasure>, Status> {
        let me = self.caller(&req)?;
        let r = req.into_inner();
        let reason = required_text("reason", &r.reason, "a reason for the rejection")?;
        let e = self.0.reject_erasure(&me, r.erasure_id, reason).await?;
        Ok(Response::new(erasure(&e)))
    }

    async fn list_case_erasures(
        &self,
        req: Request<ListCaseErasuresRequest>,
    ) -> Result<Response<ListCaseErasuresResponse>, Status> {
        self.caller(&req)?;
        let all = self.0.erasures().await?;
        Ok(Response::new(ListCaseErasuresResponse {
            erasures: all.iter().rev().map(|v| erasure(&v.record)).collect(),
        }))
    }

    async fn admin_alerts(&self, req: Request<AdminAlertsRequest>) -> Result<Response<AdminAlertsResponse>, Status> {
        self.caller(&req)?;
        let unavailable =
            |e: henvis_bus::BusError| Status::unavailable(format!("the audit is unavailable; try again: {e}"));
        // first what cannot be in the audit: services that cannot write it (and so deliver
        // nothing); shown even when the audit itself cannot be read
        let mut alerts: Vec<String> = self
            .0
            .bus
            .audit_alarms()
            .await
            .map_err(unavailable)?
            .iter()
            .map(|a| {
                serde_json::json!({
                    "kind": "audit_unwritable",
                    "service": a.service,
                    "since": a.since,
                    "last_failure": a.last_failure,
                    "failures": a.failures,
                    "reason": a.reason,
                })
                .to_string()
            })
            .collect();
        match self
            .0
            .bus
            .read_subject(henvis_bus::STREAM_AUDIT, &henvis_bus::audit_admin_filter())
            .await
        {
            Ok(recorded) => alerts.extend(recorded.iter().map(|b| String::from_utf8_lossy(b).into_owned())),
            Err(e) if !alerts.is_empty() => {
                tracing::warn!(error = %e, "administrator alerts in the audit unreadable");
                alerts.push(
                    r#"{"kind":"audit_unreadable","reason":"the alerts kept in the audit cannot be read now"}"#.into(),
                );
            }
            Err(e) => return Err(unavailable(e)),
        }
        let dead = self
            .0
            .bus
            .read_messages(henvis_bus::STREAM_DEAD, &format!("{}.>", henvis_bus::DEAD_PREFIX))
            .await
            .map_err(unavailable)?;
        Ok(Response::new(AdminAlertsResponse {
            alerts,
            dead_letters: dead.into_iter().map(|(s, _)| s).collect(),
        }))
    }
}

/// A directory change from the wire, each field checked and named.
fn directory_change(i: usize, c: &WireChange) -> Result<DirectoryChange, Status> {
    let field = |name: &str| format!("changes[{i}].{name}");
    let agency = |name: &str, v: &str| {
        AgencyId::parse(v).map_err(|e| Status::invalid_argument(format!("`{}`: {e}", field(name))))
    };
    let person = |name: &str, v: &str| {
        PersonId::parse(v).map_err(|e| Status::invalid_argument(format!("`{}`: {e}", field(name))))
    };
    Ok(match c.change.as_ref() {
        None => {
            return Err(Status::invalid_argument(format!(
                "`{}`: one change expected (add_agency, disable_agency, enable_agency, add_contact_person, assign_contact_person, disable_person, enable_person, add_administrator)",
                format_args!("changes[{i}]")
            )));
        }
        Some(wire_change::Change::AddAgency(a)) => DirectoryChange::AddAgency {
            id: agency("add_agency.agency_id", &a.agency_id)?,
            name: a.name.clone(),
            sector: henvis_domain::Sector::parse(&a.sector).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "`{}`: `police`, `health`, `social` or `ngo` expected",
                    field("add_agency.sector")
                ))
            })?,
        },
        Some(wire_change::Change::DisableAgency(a)) => DirectoryChange::DisableAgency {
            id: agency("disable_agency", a)?,
        },
        Some(wire_change::Change::EnableAgency(a)) => DirectoryChange::EnableAgency {
            id: agency("enable_agency", a)?,
        },
        Some(wire_change::Change::AddContactPerson(p)) => DirectoryChange::AddContactPerson {
            id: person("add_contact_person.person_id", &p.person_id)?,
            agency: agency("add_contact_person.agency_id", &p.agency_id)?,
        },
        Some(wire_change::Change::AssignContactPerson(p)) => DirectoryChange::AssignContactPerson {
            id: person("assign_contact_person.person_id", &p.person_id)?,
            agency: agency("assign_contact_person.agency_id", &p.agency_id)?,
        },
        Some(wire_change::Change::DisablePerson(p)) => DirectoryChange::DisablePerson {
            id: person("disable_person", p)?,
        },
        Some(wire_change::Change::EnablePerson(p)) => DirectoryChange::EnablePerson {
            id: person("enable_person", p)?,
        },
        Some(wire_change::Change::AddAdministrator(p)) => DirectoryChange::AddAdministrator {
            id: person("add_administrator", p)?,
        },
    })
}

/// A directory change in words.
pub(crate) fn describe_change(c: &DirectoryChange) -> String {
    match c {
        DirectoryChange::AddAgency { id, name, sector } => format!("add agency {id} ({sector}): {name}"),
        DirectoryChange::DisableAgency { id } => format!("disable agency {id}"),
        DirectoryChange::EnableAgency { id } => format!("enable agency {id}"),
        DirectoryChange::AddContactPerson { id, agency } => format!("add contact person {id} to {agency}"),
        DirectoryChange::AssignContactPerson { id, agency } => format!("assign contact person {id} to {agency}"),
        DirectoryChange::DisablePerson { id } => format!("disable person {id}"),
        DirectoryChange::EnablePerson { id } => format!("enable person {id}"),
        DirectoryChange::AddAdministrator { id } => format!("add administrator {id}"),
    }
}

/// A four-eyes decision as the wire shows it: state, who approved when, who rejected when
/// and why.
struct Decided {
    state: RuleSetState,
    approved: (String, Option<prost_types::Timestamp>),
    rejected: (String, Option<prost_types::Timestamp>, String),
}

fn decided(d: &Option<ProposalDecision>) -> Decided {
    match d {
        Some(ProposalDecision::Approved { by, at, .. }) => Decided {
            state: RuleSetState::Live,
            approved: (by.to_string(), ts(*at)),
            rejected: Default::default(),
        },
        Some(ProposalDecision::Rejected { by, at, reason }) => Decided {
            state: RuleSetState::Rejected,
            approved: Default::default(),
            rejected: (by.to_string(), ts(*at), reason.clone()),
        },
        None => Decided {
            state: RuleSetState::Proposed,
            approved: Default::default(),
            rejected: Default::default(),
        },
    }
}

fn erasure(e: &henvis_domain::CaseErasure) -> WireErasure {
    let Decided {
        state,
        approved: (approved_by, approved_at),
        rejected: (rejected_by, rejected_at, rejection_reason),
    } = decided(&e.decision);
    WireErasure {
        erasure_id: e.id,
        case_id: e.case_id.clone(),
        reason: e.reason.clone(),
        police_hold_override: e.police_hold_override.clone().unwrap_or_default(),
        state: state as i32,
        proposed_by: e.proposed_by.to_string(),
        proposed_at: ts(e.proposed_at),
        approved_by,
        approved_at,
        rejected_by,
        rejected_at,
        rejection_reason,
        delivered_to: e.delivered_to.clone(),
        statement: crate::erasure::statement(e),
    }
}

fn directory_proposal(p: &DirectoryProposal) -> DirectoryChangeProposal {
    let Decided {
        state,
        approved: (approved_by, approved_at),
        rejected: (rejected_by, rejected_at, rejection_reason),
    } = decided(&p.decision);
    DirectoryChangeProposal {
        proposal_id: p.id,
        changes: p.changes.iter().map(describe_change).collect(),
        state: state as i32,
        proposed_by: p.proposed_by.to_string(),
        proposed_at: ts(p.proposed_at),
        note: p.note.clone(),
        approved_by,
        approved_at,
        rejected_by,
        rejected_at,
        rejection_reason,
    }
}
