//! What-if replay: the routing decisions of a recent window, decided again by the policy
//! engine (the function the router decides with) on the live set and on a candidate, with
//! the same input each time — message type, sender, submission time, the event's BASIC
//! flags and the referral answered, all from the decision's audit record, and the case as
//! its record stands now. No event is read. The difference is exactly what the candidate
//! changes; how many live replays differ from what was recorded (the case changed since,
//! or another set decided) is reported beside it.

use std::collections::{BTreeMap, HashMap};

use henvis_domain::{AgencyId, AuditDecision, AuditRecord, CaseId, CaseRecord, ClassSet, MessageType};
use henvis_policy::{Decision, DecisionInput, RuleSet, decide};
use tonic::Status;

use crate::Admin;

/// One delivery gained, lost or changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item {
    pub event_id: String,
    pub case_id: String,
    pub message_type: String,
    pub recipient: String,
    pub rule_ids: Vec<String>,
    pub classes: ClassSet,
}

/// The result of a replay.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    pub replayed: u32,
    pub skipped: u32,
    pub differs_from_record: u32,
    pub gained: Vec<Item>,
    pub lost: Vec<Item>,
    pub classes_gained: Vec<Item>,
    pub classes_lost: Vec<Item>,
    /// (message type, recipient, rule) → (gained, lost)
    pub counts: BTreeMap<(String, String, String), (u32, u32)>,
}

/// Compares two decisions on the same input and adds the differences to `out`.
pub(crate) fn compare(d: &AuditDecision, live: &Decision, candidate: &Decision, out: &mut Replay) {
    let item = |agency: &AgencyId, rule_ids: &[String], classes: ClassSet| Item {
        event_id: d.event_id.clone(),
        case_id: d.case_id.clone(),
        message_type: d.message_type.clone(),
        recipient: agency.to_string(),
        rule_ids: rule_ids.to_vec(),
        classes,
    };
    let before: HashMap<&AgencyId, &henvis_policy::Recipient> =
        live.recipients.iter().map(|r| (&r.agency, r)).collect();
    let after: HashMap<&AgencyId, &henvis_policy::Recipient> =
        candidate.recipients.iter().map(|r| (&r.agency, r)).collect();
    let mut count = |rule: &str, agency: &AgencyId, gained: bool| {
        let e = out
            .counts
            .entry((d.message_type.clone(), agency.to_string(), rule.to_owned()))
            .or_default();
        if gained {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    };
    for r in &candidate.recipients {
        match before.get(&r.agency) {
            None => {
                for rule in &r.rule_ids {
                    count(rule, &r.agency, true);
                }
                out.gained.push(item(&r.agency, &r.rule_ids, r.classes));
            }
            Some(b) => {
                let (more, fewer) = (r.classes.difference(b.classes), b.classes.difference(r.classes));
                if !more.is_empty() {
                    out.classes_gained.push(item(&r.agency, &r.rule_ids, more));
                }
                if !fewer.is_empty() {
                    out.classes_lost.push(item(&r.agency, &b.rule_ids, fewer));
                }
            }
        }
    }
    for r in &live.recipients {
        if !after.contains_key(&r.agency) {
            for rule in &r.rule_ids {
                count(rule, &r.agency, false);
            }
            out.lost.push(item(&r.agency, &r.rule_ids, r.classes));
        }
    }
}

/// Whether a live replay delivers what the audit record says was delivered.
fn same_as_record(d: &AuditDecision, live: &Decision) -> bool {
    let recorded: BTreeMap<&str, Vec<&str>> = d
        .delivered
        .iter()
        .map(|r| (r.agency.as_str(), r.classes.iter().map(String::as_str).collect()))
        .collect();
    let replayed: BTreeMap<&str, Vec<&str>> = live
        .recipients
        .iter()
        .map(|r| (r.agency.as_str(), r.classes.iter().map(|c| c.as_str()).collect()))
        .collect();
    recorded == replayed
}

impl Admin {
    /// Replays the decisions of the last `days` days on `live` and `candidate`.
    pub(crate) async fn what_if(&self, live: &RuleSet, candidate: &RuleSet, days: u32) -> Result<Replay, Status> {
        let since = crate::now() - i64::from(days) * 24 * 3600;
        let raw = self
            .bus
            .read_subject_since(henvis_bus::STREAM_AUDIT, &henvis_bus::audit_decisions_filter(), since)
            .await
            .map_err(|e| Status::unavailable(format!("the audit is unavailable; try again: {e}")))?;
        let records: Vec<AuditRecord> = raw
            .iter()
            .map(|b| serde_json::from_slice(b))
            .collect::<Result<_, _>>()
            .map_err(|e| Status::data_loss(format!("an audit record does not parse: {e}")))?;
        // each event's standing decision (voided ones were decided again)
        let mut last: BTreeMap<&str, &AuditDecision> = BTreeMap::new();
        for d in henvis_domain::standing_decisions(&records) {
            last.insert(&d.event_id, d);
        }
        let directory = self.directory.current();
        let mut out = Replay::default();
        let mut cases: HashMap<String, Option<CaseRecord>> = HashMap::new();
        for d in last.values().copied() {
            if d.decided_at < since {
                continue;
            }
            let case = match cases.get(&d.case_id) {
                Some(c) => c.clone(),
                None => {
                    let c = match CaseId::parse(&d.case_id) {
                        Ok(id) => self
                            .bus
                            .case(&id)
                            .await
                            .map_err(|e| Status::unavailable(format!("case records unavailable; try again: {e}")))?
                            .map(|v| v.record),
                        Err(_) => None,
                    };
                    cases.insert(d.case_id.clone(), c.clone());
                    c
                }
            };
            let (Some(case), Ok(mt), Ok(sender)) =
                (case, MessageType::parse(&d.message_type), AgencyId::parse(&d.sender))
            else {
                out.skipped += 1;
                continue;
            };
            let Some(sector) = directory.agency(&sender).map(|a| a.sector) else {
                out.skipped += 1;
                continue;
            };
            let referral_sender = d.referral_sender.as_deref().and_then(|s| AgencyId::parse(s).ok());
            let input = DecisionInput {
                mt: &mt,
                sender: &sender,
                sender_sector: sector,
                case: &case,
                at: d.decided_at,
                referral_sender: referral_sender.as_ref(),
                flags: &d.flags,
                named: &d.named,
            };
            let now_live = decide(live, &directory, &input);
            let now_candidate = decide(candidate, &directory, &input);
            out.replayed += 1;
            if !same_as_record(d, &now_live) {
                out.differs_from_record += 1;
            }
            compare(d, &now_live, &now_candidate, &mut out);
        }
        Ok(out)
    }
}
