//! The exhaustive matrix through the real services: every message type × every sender
//! sector that may originate it × case relation (no guardian / guardian) × consent state
//! (none / in force / withdrawn), each event full of tagged canaries. Counts unentitled
//! deliveries, canaries of withheld classes in deliveries, any canary in status records,
//! audit records, NATS headers or debug logs, and entitled fields missing.

use std::collections::{BTreeMap, HashMap};

use henvis_domain::{Class, ClassSet, Directory, MessageType, Sector};
use henvis_policy::{RuleSet, Schema};
use henvis_proto::henvis::{broker::v1::Delivery, events::v1::*};
use henvis_tests::Deployment;
use prost::Message;

use crate::{canary, routed, submit};

fn ts(s: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds: s, nanos: 0 })
}

fn ev(kind: event::Kind) -> Event {
    Event { kind: Some(kind) }
}

// Senders the case relates to (its police district, region and municipality) and the NGO that
// becomes guardian: an agency outside a case cannot add to it at all.
pub(crate) fn sender_of(sector: Sector) -> &'static str {
    match sector {
        Sector::Police => "politi-koebenhavn",
        Sector::Health => "region-hovedstaden",
        Sector::Social => "kommune-101",
        Sector::Ngo => "ngo-redbarnet",
    }
}

/// A delivery as stored: decoded, raw bytes, NATS headers, recipient from the subject.
type Stored = (Delivery, Vec<u8>, String, String);

struct Accepted {
    event_id: String,
    mt: MessageType,
    sender: String,
    canaries: Vec<(String, Class)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_sender_relation_and_consent_state_through_the_services_leaks_nothing() {
    let d = Deployment::start().await.unwrap();
    let schema = Schema::from_descriptor_set(henvis_proto::FILE_DESCRIPTOR_SET).unwrap();
    let dir = Directory::denmark().unwrap();
    let rules = RuleSet::from_toml("rules/default.toml", henvis_router::DEFAULT_RULES, &schema, &dir).unwrap();
    let mut clients = HashMap::new();
    for sector in Sector::ALL {
        clients.insert(sector, d.client(sector, sender_of(sector)).await.unwrap());
    }
    let mut opener = d.client(Sector::Ngo, "ngo-hopenow").await.unwrap();
    let states = [
        ("no guardian", false, "none"),
        ("guardian", true, "none"),
        ("guardian", true, "in force"),
        ("guardian", true, "withdrawn"),
    ];
    let types: Vec<MessageType> = schema.message_types().cloned().collect();
    let (mut combos, mut refused) = (0usize, 0usize);
    let mut accepted = Vec::new();
    for mt in &types {
        for sector in Sector::ALL
            .into_iter()
            .filter(|s| henvis_domain::originates(*s).contains(&mt.as_str()))
        {
            for (relation, guardian, consent) in states {
                combos += 1;
                let tag = format!("{combos:04}");
                let open = ev(event::Kind::SuspectedVictimReported(SuspectedVictimReported {
                    municipality_code: "101".into(),
                    observed_at: ts(1_790_000_000),
                    ..Default::default()
                }));
                let case = submit(&mut opener, &format!("open-{tag}"), "", open)
                    .await
                    .unwrap()
                    .case_id;
                if guardian {
                    let appoint = ev(event::Kind::GuardianAppointed(GuardianAppointed {
                        guardian_agency_id: "ngo-redbarnet".into(),
                        guardian_kind: GuardianKind::NgoSocialWorker as i32,
                        guardian_contact: String::new(),
                        appointed_at: ts(1_790_000_000),
                    }));
                    submit(
                        clients.get_mut(&Sector::Social).unwrap(),
                        &format!("g-{tag}"),
                        &case,
                        appoint,
                    )
                    .await
                    .unwrap();
                }
                if consent != "none" {
                    let ngo = clients.get_mut(&Sector::Ngo).unwrap();
                    let record = ev(event::Kind::ConsentRecorded(ConsentRecorded {
                        consent_id: "c1".into(),
                        recipient_sectors: vec![1, 2, 3, 4],
                        valid_from: ts(1_700_000_000),
                        valid_until: ts(2_100_000_000),
                        ..Default::default()
                    }));
                    submit(ngo, &format!("c-{tag}"), &case, record).await.unwrap();
                    if consent == "withdrawn" {
                        let w = ev(event::Kind::ConsentWithdrawn(ConsentWithdrawn {
                            consent_id: "c1".into(),
                            reason: String::new(),
                        }));
                        submit(ngo, &format!("w-{tag}"), &case, w).await.unwrap();
                    }
                }
                let (event, canaries) = canary::canary_event_tagged(&schema, mt.as_str(), &tag, &[]);
                let before = d.stream_messages("IN").await.unwrap();
                let c = clients.get_mut(&sector).unwrap();
                match submit(c, &format!("m-{tag}"), &case, event).await {
                    Ok(r) => accepted.push(Accepted {
                        event_id: r.event_id,
                        mt: mt.clone(),
                        sender: sender_of(sector).to_owned(),
                        canaries,
                    }),
                    Err(e) => {
                        // a workflow guard (no guardian yet, not the guardian, no confirmed
                        // reception, not the case's municipality) or a sender that takes no
                        // part in the case (answered as an unknown case): nothing stored
                        assert!(
                            matches!(
                                e.code(),
                                tonic::Code::FailedPrecondition | tonic::Code::PermissionDenied | tonic::Code::NotFound
                            ),
                            "{mt} from {sector} ({relation}, {consent}): {e:?}"
                        );
                        assert_eq!(d.stream_messages("IN").await.unwrap(), before);
                        refused += 1;
                    }
                }
            }
        }
    }
    // wait until every accepted event is decided
    let mut status_client = HashMap::new();
    for sector in Sector::ALL {
        status_client.insert(
            sender_of(sector).to_owned(),
            d.client(sector, sender_of(sector)).await.unwrap(),
        );
    }
    for a in &accepted {
        routed(status_client.get_mut(&a.sender).unwrap(), &a.event_id).await;
    }

    // every delivery, straight from the OUT stream
    let js = d.jetstream().await.unwrap();
    let out = js.get_stream("OUT").await.unwrap();
    let last = out.get_info().await.unwrap().state.last_sequence;
    let mut deliveries: BTreeMap<String, Vec<Stored>> = BTreeMap::new();
    for seq in 1..=last {
        if let Ok(m) = out.get_raw_message(seq).await {
            // what the recipient receives: the delivery opened with the case's key
            let opened = d.opened(&m.payload).await.unwrap();
            let delivery = Delivery::decode(opened.as_slice()).unwrap();
            let event_id = delivery.envelope.as_ref().unwrap().event_id.clone();
            let recipient = m.subject.split('.').nth(2).unwrap_or_default().to_owned();
            deliveries
                .entry(event_id)
                .or_default()
                .push((delivery, opened, format!("{:?}", m.headers), recipient));
        }
    }
    let (mut delivered, mut unentitled, mut withheld_canaries, mut missing, mut elsewhere) = (0, 0, 0, 0, 0);
    let mut side_channels = String::new();
    for (stream, filter) in [("STATUS", "henvis.status.>"), ("AUDIT", "henvis.audit.>")] {
        for (_, bytes) in d.read_all(stream, filter).await.unwrap() {
            side_channels.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    side_channels.push_str(&henvis_tests::captured_logs());
    for a in &accepted {
        let type_rules = rules.rules_for(&a.mt);
        for (delivery, bytes, headers, recipient) in deliveries.get(&a.event_id).map(Vec::as_slice).unwrap_or_default()
        {
            delivered += 1;
            let env = delivery.envelope.as_ref().unwrap();
            let granted: ClassSet = delivery
                .granted_classes
                .iter()
                .filter_map(|n| Class::from_number(*n))
                .collect();
            // entitled: every granted class is granted by one of the named routes of this type
            let entitled = type_rules.is_some_and(|t| {
                delivery.rule_ids.iter().all(|id| t.routes.iter().any(|r| &r.id == id))
                    && granted.iter().all(|c| {
                        delivery
                            .rule_ids
                            .iter()
                            .any(|id| t.routes.iter().any(|r| &r.id == id && r.classes.contains(c)))
                    })
            }) && recipient != &a.sender
                && env.sender.as_ref().is_some_and(|s| s.agency_id == a.sender);
            unentitled += usize::from(!entitled);
            let seen = canary::found(bytes, &a.canaries);
            withheld_canaries += seen.iter().filter(|(_, c)| !granted.contains(*c)).count();
            missing += a
                .canaries
                .iter()
                .filter(|(c, k)| granted.contains(*k) && !seen.iter().any(|(s, _)| s == c))
                .count();
            elsewhere += canary::found(headers.as_bytes(), &a.canaries).len();
        }
        elsewhere += canary::found(side_channels.as_bytes(), &a.canaries).len();
    }
    println!(
        "matrix through the services: {combos} combinations ({} types), {} accepted, {refused} refused by workflow guards, {delivered} deliveries; unentitled {unentitled}, withheld-class canaries delivered {withheld_canaries}, canaries in status/audit/headers/logs {elsewhere}, entitled fields missing {missing}",
        types.len(),
        accepted.len()
    );
    assert!(delivered > 100, "the matrix exercises real deliveries");
    assert_eq!((unentitled, withheld_canaries, elsewhere, missing), (0, 0, 0, 0));
}
