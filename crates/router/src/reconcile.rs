//! End-to-end reconciliation: compares what was stored for senders (IN), what the router
//! decided (STATUS: stored / received / withheld per recipient) and what sits in each inbox
//! (OUT), reports the gaps and, when asked, re-drives missing deliveries. A re-drive decides
//! again under the rules and case as they are now, so a recipient no longer entitled (a
//! consent withdrawn since) gets nothing; and it is idempotent per reconciliation pass.

use std::collections::{BTreeMap, BTreeSet};

use henvis_bus::{ROUTER_WRITER, STATUS_PREFIX, STREAM_IN, STREAM_OUT, STREAM_STATUS};
use henvis_domain::CaseRecord;
use henvis_proto::henvis::broker::v1::{Delivery, DeliveryState, Envelope, GetStatusResponse};
use prost::Message;

use crate::{Router, plan};

/// What a reconciliation found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Events stored in IN.
    pub events: usize,
    /// Events the router has decided.
    pub decided: usize,
    /// Events not decided yet (still with the router, or refused as unroutable).
    pub undecided: Vec<String>,
    /// (event, recipient) deliveries decided.
    pub deliveries: usize,
    /// …of which acknowledged by the recipient.
    pub received: usize,
    /// …of which waiting in the recipient's inbox.
    pub waiting: usize,
    /// Decided, not received, and not in the inbox: lost behind the broker's back.
    pub missing: Vec<(String, String)>,
    /// Missing deliveries stored again.
    pub redriven: usize,
    /// Missing deliveries whose recipient is no longer entitled (not re-driven).
    pub no_longer_entitled: usize,
}

impl Router {
    /// Reconciles IN, STATUS and OUT; with `redrive`, stores every missing delivery again.
    pub async fn reconcile(&self, redrive: bool) -> anyhow::Result<Report> {
        let mut report = Report::default();
        // what reached each inbox and is still there
        let (out_first, out_last) = self.bus.stored_range(STREAM_OUT).await?;
        let mut in_inbox = BTreeSet::new();
        for seq in out_first..=out_last {
            if let Some(m) = self.bus.stored_message(STREAM_OUT, seq).await? {
                let recipient = henvis_bus::outbound_parts(&m.subject)
                    .map(|(r, _)| r)
                    .unwrap_or_default()
                    .to_owned();
                // an erased case's waiting deliveries cannot be opened: not counted
                let Ok(opened) = self.bus.open(&m.payload).await else {
                    continue;
                };
                if let Some(env) = Delivery::decode(opened.plaintext.as_slice())
                    .ok()
                    .and_then(|d| d.envelope)
                {
                    in_inbox.insert((env.event_id, recipient));
                }
            }
        }
        // what the router decided and what recipients acknowledged
        let mut states: BTreeMap<String, BTreeMap<String, i32>> = BTreeMap::new();
        for (subject, payload) in self
            .bus
            .read_messages(STREAM_STATUS, &format!("{STATUS_PREFIX}.>"))
            .await?
        {
            let writer = henvis_bus::status_writer(&subject).unwrap_or_default().to_owned();
            // the sender's "submitted" record says nothing about a decision
            let Ok(rec) = GetStatusResponse::decode(payload) else {
                continue;
            };
            if !rec.routed {
                continue;
            }
            let entry = states.entry(rec.event_id).or_default();
            for r in rec.recipients.into_iter().filter(|r| {
                !r.recipient_agency_id.is_empty()
                    && henvis_bus::status_writer_may_speak_for(&writer, &r.recipient_agency_id)
            }) {
                let s = entry.entry(r.recipient_agency_id).or_default();
                *s = (*s).max(r.state);
            }
        }
        // every stored event
        let (first, last) = self.bus.stored_range(STREAM_IN).await?;
        for seq in first..=last {
            let Some(m) = self.bus.stored_message(STREAM_IN, seq).await? else {
                continue;
            };
            // an erased case's events cannot be opened: nothing of them is re-driven
            let Ok(opened) = self.bus.open(&m.payload).await else {
                continue;
            };
            let Ok(env) = Envelope::decode(opened.plaintext.as_slice()) else {
                continue;
            };
            report.events += 1;
            let Some(recipients) = states.get(&env.event_id) else {
                report.undecided.push(env.event_id.clone());
                continue;
            };
            report.decided += 1;
            for (agency, state) in recipients {
                if *state == DeliveryState::Withheld as i32 {
                    continue;
                }
                report.deliveries += 1;
                if *state >= DeliveryState::Received as i32 {
                    report.received += 1;
                } else if in_inbox.contains(&(env.event_id.clone(), agency.clone())) {
                    report.waiting += 1;
                } else {
                    report.missing.push((env.event_id.clone(), agency.clone()));
                    if redrive {
                        if self.redeliver(&opened.plaintext, agency, out_last).await? {
                            report.redriven += 1;
                        } else {
                            report.no_longer_entitled += 1;
                        }
                    }
                }
            }
        }
        Ok(report)
    }

    /// Stores the delivery of `payload` (an opened envelope) to `agency` again if the agency is still entitled.
    async fn redeliver(&self, payload: &[u8], agency: &str, pass: u64) -> anyhow::Result<bool> {
        let env = Envelope::decode(payload)?;
        // the very facts the router decides on (the referral's sender included)
        let Ok(facts) = self.facts(&env).await else {
            return Ok(false);
        };
        let case = self
            .bus
            .case(&facts.case_id)
            .await?
            .map(|c| c.record)
            .unwrap_or_else(CaseRecord::new);
        // the same plan the router executes, for the case and rules as they are now
        let rules = self.rules.current();
        let directory = self.directory.current();
        let ctx = plan::Context {
            schema: &self.schema,
            directory: &directory,
            rules: &rules,
        };
        let p = plan::plan(&ctx, &env, &facts, &case, 0).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let Some(d) = p.deliveries.iter().find(|d| d.agency.as_str() == agency) else {
            return Ok(false);
        };
        let id = format!("redrive:{}:{agency}:{pass}", env.event_id);
        let sealed = self.bus.seal(&env.case_id, &d.delivery.encode_to_vec()).await?;
        self.bus.publish_stored(d.subject.clone(), &id, sealed).await?;
        let alert = henvis_domain::AuditRecord::DeliveryRedriven {
            event_id: env.event_id.clone(),
            agency: agency.to_string(),
            rule_set_version: p.decision.rule_set_version.clone(),
        };
        self.bus
            .audit(
                ROUTER_WRITER,
                &format!("redrive-alert:{}:{agency}:{pass}", env.event_id),
                &alert,
            )
            .await?;
        Ok(true)
    }
}
