//! What the router would do with an event it has not stored, for administrators testing a
//! rule set before it goes live: the same facts, the same workflow guards, the same case
//! step and the same plan as routing (route.rs, plan.rs), on a rule set of the caller's
//! choosing and a case as the caller gives it. Nothing is read or written.

use henvis_domain::{AgencyId, CaseChange, CaseRecord, ClassSet, Directory};
use henvis_policy::{Decision, RuleSet, Schema};
use henvis_proto::henvis::{broker::v1::Envelope, events::v1::event::Kind};

use crate::{
    plan::{self, Context},
    route::{Facts, RouteError},
};

/// One recipient's delivery as the router would make it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatedDelivery {
    /// The recipient.
    pub agency: AgencyId,
    /// The classes it would see.
    pub granted: ClassSet,
    /// The classes present in the event that it would not see.
    pub withheld: ClassSet,
    /// The routes that entitle it.
    pub rule_ids: Vec<String>,
    /// Their legal bases.
    pub legal_bases: Vec<String>,
    /// The consents a consent route rested on.
    pub consent_ids: Vec<String>,
    /// The alert urgency its routes raise, if any.
    pub alert: Option<String>,
}

/// What routing the event would produce.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// The case change the event makes, by name (`none` when it makes none).
    pub case_change: &'static str,
    /// The decision (recipients, and what was withheld and why).
    pub decision: Decision,
    /// Each recipient's delivery.
    pub deliveries: Vec<SimulatedDelivery>,
}

/// Why the router would not route the event at all.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotRoutable(pub String);

/// Simulates routing `env` (its sender, case id, submission time and event filled in as
/// a sector service would) with `rules`, the case as `before` (None: no such case yet),
/// and, for a referral response, the referral's sender as the router would find it.
pub fn simulate(
    schema: &Schema,
    directory: &Directory,
    rules: &RuleSet,
    env: &Envelope,
    before: Option<&CaseRecord>,
    referral_sender: Option<AgencyId>,
) -> Result<Simulation, NotRoutable> {
    let refused = |e: RouteError| NotRoutable(format!("{e:?}"));
    let mut facts = Facts::of(schema, directory, env).map_err(refused)?;
    if !henvis_domain::originates(facts.sector).contains(&facts.mt.as_str()) {
        return Err(NotRoutable(format!(
            "the {} sector does not send `{}` events",
            facts.sector, facts.mt
        )));
    }
    if let (Some(Kind::ReferralResponse(r)), Some(s)) =
        (env.event.as_ref().and_then(|e| e.kind.as_ref()), referral_sender)
    {
        facts.referral = Some((s, r.in_response_to_event_id.clone(), r.outcome));
    }
    let ctx = Context {
        schema,
        directory,
        rules,
    };
    let event = env.event.as_ref().ok_or_else(|| NotRoutable("no event".into()))?;
    let change = plan::case_step(&ctx, event, env, &facts, before).map_err(|e| match e {
        RouteError::Poison("event fails a workflow guard") => {
            let view = before.cloned().unwrap_or_default();
            match henvis_policy::admit(&facts.mt, &facts.sender, &view, directory) {
                Err(g) => NotRoutable(format!("a workflow guard refuses it: {g}")),
                Ok(()) => NotRoutable("a workflow guard refuses it".into()),
            }
        }
        e => refused(e),
    })?;
    // the case as the router decides on it: the change applied, the opener a participant
    let mut case = before.cloned().unwrap_or_default();
    case.apply(&change, &env.event_id);
    if matches!(change, CaseChange::Opened { .. }) {
        case.add_participants([&facts.sender]);
    }
    let p = plan::plan(&ctx, env, &facts, &case, 0).map_err(refused)?;
    let deliveries = p
        .decision
        .recipients
        .iter()
        .zip(&p.deliveries)
        .map(|(r, d)| SimulatedDelivery {
            agency: r.agency.clone(),
            granted: classes(&d.delivery.granted_classes),
            withheld: classes(&d.delivery.withheld_classes),
            rule_ids: r.rule_ids.clone(),
            legal_bases: r.bases.clone(),
            consent_ids: r.consent_ids.clone(),
            alert: r.alert.map(|u| u.as_str().to_owned()),
        })
        .collect();
    Ok(Simulation {
        case_change: change.name(),
        decision: p.decision,
        deliveries,
    })
}

fn classes(wire: &[i32]) -> ClassSet {
    wire.iter()
        .filter_map(|c| henvis_domain::Class::from_number(*c))
        .collect()
}
