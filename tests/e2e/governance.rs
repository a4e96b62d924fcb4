//! Rule-set governance through the admin service, over real gRPC and mutual TLS with a real
//! nats-server: four eyes, break-glass and its review, rollback, the effect in running
//! routers, simulation against what the router then delivers, what-if replay, and every
//! RPC refused to everyone who is not a listed administrator.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use henvis_domain::{Class, MessageType, Principal, Sector};
use henvis_policy::Schema;
use henvis_proto::henvis::{
    admin::v1::{
        AdminAlertsRequest, ApproveRuleSetRequest, BreakGlassRequest, CaseAuditRequest, DiffRuleSetsRequest,
        GetRuleSetRequest, ListRuleSetsRequest, ProposeRollbackRequest, ProposeRuleSetRequest, RejectRuleSetRequest,
        ReviewBreakGlassRequest, RuleSetRef, RuleSetState, RuleSetVersion, SimulateRequest, WhatIfRequest,
        WhoAmIRequest, admin_service_client::AdminServiceClient, rule_set_ref,
    },
    broker::v1::Delivery,
    events::v1::{ChildMissing, Event, MissingRisk, event},
};
use henvis_tests::{Deployment, admin, wait_for};
use prost::Message;
use tonic::{Code, transport::Channel};

use crate::{LIMIT, matrix::sender_of, report, routed, submit};

const DEFAULT_VERSION: &str = "version = \"2026-11-28.1\"";

/// The shipped rule set under another version (same routes).
fn version(v: &str) -> String {
    henvis_router::DEFAULT_RULES.replacen(DEFAULT_VERSION, &format!("version = \"{v}\""), 1)
}

/// The shipped rule set without its own tests (for candidates whose routes the tests no
/// longer describe).
pub(crate) fn untested(v: &str) -> String {
    let text = version(v);
    let end = text.find("\n[[test]]").unwrap();
    text[..end].to_owned()
}

async fn client(d: &Deployment, id: &str) -> AdminServiceClient<Channel> {
    d.admin_client(&admin(id)).await.unwrap()
}

async fn propose(d: &Deployment, by: &str, file: &str, text: &str) -> Result<RuleSetVersion, tonic::Status> {
    client(d, by)
        .await
        .propose_rule_set(ProposeRuleSetRequest {
            file: file.into(),
            text: text.into(),
            note: format!("{file} by {by}"),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn approve(d: &Deployment, by: &str, id: u64) -> Result<RuleSetVersion, tonic::Status> {
    client(d, by)
        .await
        .approve_rule_set(ApproveRuleSetRequest { proposal_id: id })
        .await
        .map(tonic::Response::into_inner)
}

/// The rule-set version of each routing decision in the audit, by event id.
async fn decided_versions(d: &Deployment) -> HashMap<String, String> {
    d.read_all("AUDIT", "henvis.audit.decision.>")
        .await
        .unwrap()
        .iter()
        .filter_map(|(_, b)| serde_json::from_slice::<serde_json::Value>(b).ok())
        .filter(|v| v["kind"] == "routing_decision")
        .map(|v| {
            (
                v["event_id"].as_str().unwrap().to_owned(),
                v["rule_set_version"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Submits missing-child events until one is decided under `v`, then `n` more, and
/// returns how many of those `n` were decided under another version.
async fn decisions_after_go_live(d: &Deployment, case: &str, v: &str, n: usize, tag: &str) -> usize {
    let mut ngo = d.client(Sector::Ngo, "ngo-hopenow").await.unwrap();
    let missing = || Event {
        kind: Some(event::Kind::ChildMissing(ChildMissing {
            last_seen_at: Some(prost_types::Timestamp {
                seconds: 1_790_000_000,
                nanos: 0,
            }),
            risk: MissingRisk::High as i32,
            ..Default::default()
        })),
    };
    let deadline = tokio::time::Instant::now() + LIMIT;
    for k in 0.. {
        let r = submit(&mut ngo, &format!("{tag}-probe-{k}"), case, missing())
            .await
            .unwrap();
        routed(&mut ngo, &r.event_id).await;
        if decided_versions(d).await.get(&r.event_id).map(String::as_str) == Some(v) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no decision under {v} in time");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut ids = Vec::new();
    for i in 0..n {
        let r = submit(&mut ngo, &format!("{tag}-after-{i}"), case, missing())
            .await
            .unwrap();
        routed(&mut ngo, &r.event_id).await;
        ids.push(r.event_id);
    }
    let versions = decided_versions(d).await;
    ids.iter()
        .filter(|id| versions.get(*id).map(String::as_str) != Some(v))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_set_goes_live_only_with_four_eyes_in_two_running_routers_and_rolls_back_likewise() {
    let d = Deployment::start().await.unwrap();
    // a second router: both must take every approved set
    d.start_router().await.unwrap();
    let case = submit(
        &mut d.client(Sector::Ngo, "ngo-hopenow").await.unwrap(),
        "open",
        "",
        report("101"),
    )
    .await
    .unwrap()
    .case_id;

    // a set that fails its own tests is refused with file:line:rule, and nothing is kept
    let failing = format!(
        "{}\n[[test]]\nname = \"wrong on purpose\"\nmessage = \"child_missing\"\nsender = \"ngo-hopenow\"\ncase = {{ municipality = \"101\" }}\nexpect = []\n",
        version("gov-bad")
    );
    let e = propose(&d, "admin-1", "bad.toml", &failing).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("bad.toml:") && e.message().contains("wrong on purpose"),
        "{}",
        e.message()
    );

    // proposed by admin-1: admin-1 may not approve it
    let p1 = propose(&d, "admin-1", "gov-2.toml", &version("gov-2")).await.unwrap();
    assert_eq!((p1.proposal_id, p1.state), (1, RuleSetState::Proposed as i32));
    assert!(p1.tests_passed > 20 && p1.sha256.len() == 64);
    let e = approve(&d, "admin-1", 1).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        e.message().contains("four-eyes") && e.message().contains("admin-1"),
        "{}",
        e.message()
    );
    // a version names one content
    let other = format!("{}\n# changed\n", version("gov-2"));
    let e = propose(&d, "admin-3", "gov-2b.toml", &other).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert!(e.message().contains("gov-2"), "{}", e.message());
    let live = client(&d, "admin-2")
        .await
        .list_rule_sets(ListRuleSetsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (live.live_proposal_id, live.live_rule_set_version.as_str()),
        (0, "2026-11-28.1"),
        "nothing went live yet"
    );

    // a second administrator approves: both routers decide under it within seconds
    let approved = approve(&d, "admin-2", 1).await.unwrap();
    assert_eq!(approved.state, RuleSetState::Live as i32);
    assert_eq!(approved.approved_by, "admin-2");
    let stale = decisions_after_go_live(&d, &case, "gov-2", 12, "a").await;
    assert_eq!(stale, 0, "every later decision carries the approved version");

    // a third set, then a rollback to the second: itself a proposal under four eyes
    let p2 = propose(&d, "admin-1", "gov-3.toml", &version("gov-3")).await.unwrap();
    approve(&d, "admin-3", p2.proposal_id).await.unwrap();
    assert_eq!(decisions_after_go_live(&d, &case, "gov-3", 6, "b").await, 0);
    let rb = client(&d, "admin-3")
        .await
        .propose_rollback(ProposeRollbackRequest {
            proposal_id: 1,
            note: "gov-3 misroutes".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((rb.rollback_of, rb.rule_set_version.as_str()), (1, "gov-2"));
    assert_eq!(
        approve(&d, "admin-3", rb.proposal_id).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    approve(&d, "admin-1", rb.proposal_id).await.unwrap();
    assert_eq!(decisions_after_go_live(&d, &case, "gov-2", 6, "c").await, 0);

    // rejection: never live, and a decided proposal cannot be decided again
    let p4 = propose(&d, "admin-2", "gov-4.toml", &version("gov-4")).await.unwrap();
    let e = client(&d, "admin-1")
        .await
        .reject_rule_set(RejectRuleSetRequest {
            proposal_id: p4.proposal_id,
            reason: " ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("`reason`"), "{}", e.message());
    let rejected = client(&d, "admin-1")
        .await
        .reject_rule_set(RejectRuleSetRequest {
            proposal_id: p4.proposal_id,
            reason: "not needed".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rejected.state, RuleSetState::Rejected as i32);
    assert_eq!(
        approve(&d, "admin-3", p4.proposal_id).await.unwrap_err().code(),
        Code::FailedPrecondition
    );

    // break-glass: one administrator, a reason, an administrator alert, unreviewed until
    // another administrator reviews it
    let p5 = propose(&d, "admin-1", "gov-5.toml", &version("gov-5")).await.unwrap();
    let glass = client(&d, "admin-1")
        .await
        .break_glass(BreakGlassRequest {
            proposal_id: p5.proposal_id,
            reason: "routing outage at night".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(glass.state, RuleSetState::Live as i32);
    assert!(glass.break_glass.as_ref().is_some_and(|g| !g.reviewed));
    assert_eq!(decisions_after_go_live(&d, &case, "gov-5", 4, "d").await, 0);
    let alerts = client(&d, "admin-2")
        .await
        .admin_alerts(AdminAlertsRequest {})
        .await
        .unwrap()
        .into_inner()
        .alerts;
    assert!(
        alerts
            .iter()
            .any(|a| a.contains("break_glass_used") && a.contains("admin-1")),
        "an administrator alert: {alerts:?}"
    );
    let who = client(&d, "admin-2")
        .await
        .who_am_i(WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(who.unreviewed_break_glass, 1);
    let review = |by: &'static str| {
        let d = &d;
        async move {
            client(d, by)
                .await
                .review_break_glass(ReviewBreakGlassRequest {
                    proposal_id: p5.proposal_id,
                    note: "checked the diff; fine".into(),
                })
                .await
        }
    };
    assert_eq!(review("admin-1").await.unwrap_err().code(), Code::PermissionDenied);
    let reviewed = review("admin-2").await.unwrap().into_inner();
    assert!(
        reviewed
            .break_glass
            .as_ref()
            .is_some_and(|g| g.reviewed && g.reviewed_by == "admin-2")
    );
    let who = client(&d, "admin-3")
        .await
        .who_am_i(WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(who.unreviewed_break_glass, 0);

    // every step is in the audit, naming the proven administrator
    let steps: Vec<serde_json::Value> = d
        .read_all("AUDIT", "henvis.audit.rules")
        .await
        .unwrap()
        .iter()
        .map(|(_, b)| serde_json::from_slice(b).unwrap())
        .collect();
    let kinds: Vec<(String, String)> = steps
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap().to_owned(),
                s["by"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for expected in [
        ("rule_set_proposed", "admin-1"),
        ("rule_set_approved", "admin-2"),
        ("rule_set_approved", "admin-3"),
        ("rule_set_proposed", "admin-3"),
        ("rule_set_rejected", "admin-1"),
        ("rule_set_approved", "admin-1"),
        ("break_glass_reviewed", "admin-2"),
    ] {
        assert!(
            kinds.iter().any(|(k, b)| k == expected.0 && b == expected.1),
            "{expected:?} in {kinds:?}"
        );
    }
    let listed = client(&d, "admin-3")
        .await
        .list_rule_sets(ListRuleSetsRequest {})
        .await
        .unwrap()
        .into_inner();
    let states: Vec<(u64, i32)> = listed.versions.iter().map(|v| (v.proposal_id, v.state)).collect();
    assert_eq!(
        states,
        vec![
            (5, RuleSetState::Live as i32),
            (4, RuleSetState::Rejected as i32),
            (3, RuleSetState::Superseded as i32),
            (2, RuleSetState::Superseded as i32),
            (1, RuleSetState::Superseded as i32),
        ]
    );
    println!(
        "governance: 5 proposals, {} audit steps, two routers took every approved set; self-approval, self-review, reused version and empty reason refused",
        steps.len()
    );
}

/// The JSON form of an event, as a client would send it.
fn event_json(schema: &Schema, e: &Event) -> String {
    let dm =
        prost_reflect::DynamicMessage::decode(schema.event_descriptor().clone(), e.encode_to_vec().as_slice()).unwrap();
    serde_json::to_string(&dm).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulation_agrees_with_what_the_router_delivers_for_every_message_type() {
    let d = Deployment::start().await.unwrap();
    let schema = Schema::from_descriptor_set(henvis_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut admin = client(&d, "admin-1").await;
    let mut clients = HashMap::new();
    for sector in Sector::ALL {
        clients.insert(sector, d.client(sector, sender_of(sector)).await.unwrap());
    }
    let mut opener = d.client(Sector::Ngo, "ngo-hopenow").await.unwrap();
    let js = d.jetstream().await.unwrap();
    let (mut agreed, mut both_refused, mut types) = (0, 0, BTreeSet::new());
    let mut disagreements = Vec::new();
    for (n, mt) in schema
        .message_types()
        .cloned()
        .collect::<Vec<MessageType>>()
        .iter()
        .enumerate()
    {
        for sector in Sector::ALL
            .into_iter()
            .filter(|s| henvis_domain::originates(*s).contains(&mt.as_str()))
        {
            let tag = format!("{n:02}{sector}");
            // a case with a guardian and a consent in force: the most routes open
            let opened = submit(&mut opener, &format!("open-{tag}"), "", report("101"))
                .await
                .unwrap();
            routed(&mut opener, &opened.event_id).await;
            let (case, opening) = (opened.case_id, opened.event_id);
            let social = clients.get_mut(&Sector::Social).unwrap();
            let appoint = Event {
                kind: Some(event::Kind::GuardianAppointed(
                    henvis_proto::henvis::events::v1::GuardianAppointed {
                        guardian_agency_id: "ngo-redbarnet".into(),
                        guardian_kind: henvis_proto::henvis::events::v1::GuardianKind::NgoSocialWorker as i32,
                        guardian_contact: String::new(),
                        appointed_at: Some(prost_types::Timestamp {
                            seconds: 1_790_000_000,
                            nanos: 0,
                        }),
                    },
                )),
            };
            let g = submit(social, &format!("g-{tag}"), &case, appoint).await.unwrap();
            routed(social, &g.event_id).await;
            let ngo = clients.get_mut(&Sector::Ngo).unwrap();
            let consent = Event {
                kind: Some(event::Kind::ConsentRecorded(
                    henvis_proto::henvis::events::v1::ConsentRecorded {
                        consent_id: "c1".into(),
                        recipient_sectors: vec![1, 2, 3, 4],
                        valid_from: Some(prost_types::Timestamp {
                            seconds: 1_700_000_000,
                            nanos: 0,
                        }),
                        valid_until: Some(prost_types::Timestamp {
                            seconds: 2_100_000_000,
                            nanos: 0,
                        }),
                        ..Default::default()
                    },
                )),
            };
            let c = submit(ngo, &format!("c-{tag}"), &case, consent).await.unwrap();
            routed(ngo, &c.event_id).await;

            // what makes each type admissible: the consent the case has, a reception the
            // guardian confirmed before a return, an answer to the opening report (delivered
            // to the municipality and the police district)
            if mt.as_str() == "return_carried_out" {
                let assessed = Event {
                    kind: Some(event::Kind::ReturnAssessed(
                        henvis_proto::henvis::events::v1::ReturnAssessed {
                            responsible_reception_confirmed: true,
                            country_code: "RO".into(),
                            ..Default::default()
                        },
                    )),
                };
                let ngo = clients.get_mut(&Sector::Ngo).unwrap();
                let a = submit(ngo, &format!("ra-{tag}"), &case, assessed).await.unwrap();
                routed(ngo, &a.event_id).await;
            }
            // an age assessment is completed only by the body it was requested from
            if mt.as_str() == "age_assessment_completed" {
                let requested = Event {
                    kind: Some(event::Kind::AgeAssessmentRequested(
                        henvis_proto::henvis::events::v1::AgeAssessmentRequested {
                            reason: "age in doubt".into(),
                            assessor_agency_id: sender_of(sector).into(),
                            ..Default::default()
                        },
                    )),
                };
                let social = clients.get_mut(&Sector::Social).unwrap();
                let a = submit(social, &format!("aar-{tag}"), &case, requested).await.unwrap();
                routed(social, &a.event_id).await;
            }
            let s = |v: &str| prost_reflect::Value::String(v.to_owned());
            let fixed = [("consent_id", s("c1")), ("in_response_to_event_id", s(&opening))];
            let fixed: &[(&str, prost_reflect::Value)] = match mt.as_str() {
                "consent_withdrawn" => &fixed[..1],
                "referral_response" => &fixed[1..],
                _ => &[],
            };
            let (event, _) = crate::canary::canary_event_tagged(&schema, mt.as_str(), &tag, fixed);
            let simulated = admin
                .simulate(SimulateRequest {
                    rules: None,
                    sender_agency_id: sender_of(sector).into(),
                    event_json: event_json(&schema, &event),
                    case_id: case.clone(),
                    case_json: String::new(),
                    referral_sender_agency_id: String::new(),
                })
                .await;
            let c = clients.get_mut(&sector).unwrap();
            let submitted = submit(c, &format!("m-{tag}"), &case, event).await;
            match (simulated, submitted) {
                (Ok(sim), Ok(r)) => {
                    routed(c, &r.event_id).await;
                    let expected: BTreeMap<String, BTreeSet<String>> = sim
                        .into_inner()
                        .recipients
                        .into_iter()
                        .filter(|x| x.outcome == "delivered")
                        .map(|x| (x.agency_id, x.granted_classes.into_iter().collect()))
                        .collect();
                    let mut actual: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
                    let out = js.get_stream("OUT").await.unwrap();
                    for recipient in expected.keys() {
                        let subject = format!("henvis.out.{recipient}.{mt}");
                        if let Ok(m) = out.get_last_raw_message_by_subject(&subject).await {
                            let dl = Delivery::decode(d.opened(&m.payload).await.unwrap().as_slice()).unwrap();
                            if dl.envelope.as_ref().unwrap().event_id == r.event_id {
                                actual.insert(
                                    recipient.clone(),
                                    dl.granted_classes
                                        .iter()
                                        .filter_map(|c| Class::from_number(*c))
                                        .map(|c| c.as_str().to_owned())
                                        .collect(),
                                );
                            }
                        }
                    }
                    // and nobody else received it: the audit's recipients are the simulated ones
                    let audit: Vec<serde_json::Value> = d
                        .read_all("AUDIT", &format!("henvis.audit.decision.{case}.router"))
                        .await
                        .unwrap()
                        .iter()
                        .map(|(_, b)| serde_json::from_slice(b).unwrap())
                        .filter(|v: &serde_json::Value| v["event_id"] == r.event_id.as_str())
                        .collect();
                    let decided: BTreeSet<String> = audit.last().unwrap()["delivered"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x["agency"].as_str().unwrap().to_owned())
                        .collect();
                    if actual == expected && decided == expected.keys().cloned().collect() {
                        agreed += 1;
                        types.insert(mt.to_string());
                    } else {
                        disagreements.push(format!(
                            "{mt} from {sector}: simulated {expected:?}, delivered {actual:?}, decided {decided:?}"
                        ));
                    }
                }
                (Err(a), Err(b)) => {
                    both_refused += 1;
                    println!(
                        "both refuse {mt} from {sector}: simulation {:?} / submission {:?}",
                        a.message(),
                        b.message()
                    );
                }
                (sim, sub) => disagreements.push(format!(
                    "{mt} from {sector}: simulation {:?}, submission {:?}",
                    sim.map(|_| ()).map_err(|e| e.message().to_owned()),
                    sub.map(|_| ()).map_err(|e| e.message().to_owned())
                )),
            }
        }
    }
    println!(
        "simulation vs router: {agreed} events agree field class by field class ({} message types), {both_refused} refused by both, {} disagreements",
        types.len(),
        disagreements.len()
    );
    assert!(disagreements.is_empty(), "{disagreements:#?}");
    let submittable: BTreeSet<String> = schema
        .message_types()
        .filter(|m| !henvis_domain::SYSTEM_TYPES.contains(&m.as_str()))
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        types, submittable,
        "every type a client can submit was compared with real deliveries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_if_names_exactly_the_deliveries_a_change_gains_and_loses_over_a_thousand_decisions() {
    let d = Deployment::start().await.unwrap();
    let municipalities = ["101", "147", "746", "851", "461"];
    let mut ngo = d.client(Sector::Ngo, "ngo-hopenow").await.unwrap();
    let n = 1000;
    let mut last = String::new();
    for i in 0..n {
        let r = submit(
            &mut ngo,
            &format!("w-{i}"),
            "",
            report(municipalities[i % municipalities.len()]),
        )
        .await
        .unwrap();
        last = r.event_id;
    }
    routed(&mut ngo, &last).await;
    // the last decision of each report, from the audit
    let decisions = wait_for("every report decided", LIMIT * 3, || async {
        let v: BTreeMap<String, serde_json::Value> = d
            .read_all("AUDIT", "henvis.audit.decision.>")
            .await
            .ok()?
            .iter()
            .map(|(_, b)| serde_json::from_slice::<serde_json::Value>(b).unwrap())
            .filter(|v| v["kind"] == "routing_decision")
            .map(|v| (v["event_id"].as_str().unwrap().to_owned(), v))
            .collect();
        (v.len() >= n).then_some(v)
    })
    .await
    .unwrap();
    // the candidate: every report's police copy goes to Copenhagen's district, and the
    // municipality no longer sees the location
    let candidate = untested("what-if")
        .replacen(
            "to = \"case_police_district\"\nbasis = { statutory = \"straffeloven § 262 a; retsplejeloven § 742\" }",
            "to = \"agency:politi-koebenhavn\"\nbasis = { statutory = \"straffeloven § 262 a; retsplejeloven § 742\" }",
            1,
        )
        .replacen(
            "classes = [\"IDENTITY\", \"LOCATION\", \"SOCIAL\", \"HEALTH\", \"EXPLOITATION\"]",
            "classes = [\"IDENTITY\", \"SOCIAL\", \"HEALTH\", \"EXPLOITATION\"]",
            1,
        );
    assert_ne!(candidate, untested("what-if"), "the candidate changes something");
    let proposed = propose(&d, "admin-1", "what-if.toml", &candidate).await.unwrap();
    // paged: a response stays far below the API's message limit
    let mut admin2 = client(&d, "admin-2").await;
    let mut r = henvis_proto::henvis::admin::v1::WhatIfResponse::default();
    for page in 0.. {
        let p = admin2
            .what_if(WhatIfRequest {
                candidate: Some(RuleSetRef {
                    r#ref: Some(rule_set_ref::Ref::ProposalId(proposed.proposal_id)),
                }),
                days: 1,
                max_items: 400,
                offset: page * 400,
            })
            .await
            .unwrap()
            .into_inner();
        let empty =
            p.gained.is_empty() && p.lost.is_empty() && p.classes_lost.is_empty() && p.classes_gained.is_empty();
        if page == 0 {
            r = p;
        } else {
            r.gained.extend(p.gained);
            r.lost.extend(p.lost);
            r.classes_gained.extend(p.classes_gained);
            r.classes_lost.extend(p.classes_lost);
        }
        if empty {
            break;
        }
    }
    // what the audit says each report's police district was
    let mut want_gained = BTreeSet::new();
    let mut want_lost = BTreeSet::new();
    let mut municipality_copies = 0;
    for v in decisions.values() {
        for x in v["delivered"].as_array().unwrap() {
            let agency = x["agency"].as_str().unwrap().to_owned();
            let rules: Vec<&str> = x["rule_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            if rules.contains(&"svr-police") && agency != "politi-koebenhavn" {
                want_lost.insert((v["event_id"].as_str().unwrap().to_owned(), agency));
                want_gained.insert((
                    v["event_id"].as_str().unwrap().to_owned(),
                    "politi-koebenhavn".to_owned(),
                ));
            }
            municipality_copies += usize::from(rules.contains(&"svr-municipality"));
        }
    }
    let got = |items: &[henvis_proto::henvis::admin::v1::WhatIfDelivery]| -> BTreeSet<(String, String)> {
        items
            .iter()
            .map(|i| (i.event_id.clone(), i.recipient_agency_id.clone()))
            .collect()
    };
    assert!(r.replayed as usize >= n, "replayed {}", r.replayed);
    assert_eq!((r.skipped, r.differs_from_record), (0, 0));
    assert_eq!(got(&r.gained), want_gained, "gained exactly");
    assert_eq!(got(&r.lost), want_lost, "lost exactly");
    assert_eq!(r.classes_lost.len(), municipality_copies);
    assert_eq!(r.classes_lost_total as usize, municipality_copies);
    assert!(r.classes_lost.iter().all(|i| i.classes == ["LOCATION"]));
    assert!(r.classes_gained.is_empty());
    assert_eq!(r.gained_total as usize, want_gained.len());
    println!(
        "what-if over {} replayed decisions: {} deliveries gained, {} lost, {} lose LOCATION — each as the audit predicts",
        r.replayed,
        r.gained_total,
        r.lost_total,
        r.classes_lost.len()
    );
    assert!(
        !want_lost.is_empty() && want_lost.len() < n,
        "the change touches some reports, not all"
    );

    // the diff says the same in terms of rules
    let diff = client(&d, "admin-3")
        .await
        .diff_rule_sets(DiffRuleSetsRequest {
            from: Some(RuleSetRef {
                r#ref: Some(rule_set_ref::Ref::Live(true)),
            }),
            to: Some(RuleSetRef {
                r#ref: Some(rule_set_ref::Ref::ProposalId(proposed.proposal_id)),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let changes: BTreeSet<(String, String, String)> = diff
        .changes
        .iter()
        .map(|c| (c.message_type.clone(), c.change.clone(), c.recipient.clone()))
        .collect();
    for expected in [
        (
            "suspected_victim_reported",
            "recipient added",
            "agency politi-koebenhavn",
        ),
        (
            "suspected_victim_reported",
            "recipient removed",
            "police district of the case",
        ),
        ("suspected_victim_reported", "classes lost", "municipality of the case"),
    ] {
        assert!(
            changes.contains(&(expected.0.into(), expected.1.into(), expected.2.into())),
            "{expected:?} in {changes:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_rpc_refuses_everyone_but_a_listed_administrator_and_changes_nothing() {
    let d = Deployment::start().await.unwrap();
    let case = submit(
        &mut d.client(Sector::Ngo, "ngo-hopenow").await.unwrap(),
        "open",
        "",
        report("101"),
    )
    .await
    .unwrap()
    .case_id;
    let p = propose(&d, "admin-1", "gov-2.toml", &version("gov-2")).await.unwrap();
    // a pending directory change, and admin-2 disabled through an approved one
    use henvis_proto::henvis::admin::v1::{
        ListDirectoryChangesRequest, NatsAuthorizationRequest, RejectDirectoryChangeRequest, directory_change::Change,
    };
    let pending = propose_change(&d, "admin-1", Change::DisableAgency("ngo-hopenow".into()))
        .await
        .unwrap();
    let disable = propose_change(&d, "admin-1", Change::DisablePerson("admin-2".into()))
        .await
        .unwrap();
    approve_change(&d, "admin-3", disable.proposal_id).await.unwrap();
    wait_for("the disabled administrator to be refused", LIMIT, || async {
        let e = client(&d, "admin-2").await.who_am_i(WhoAmIRequest {}).await.err()?;
        (e.code() == Code::PermissionDenied).then_some(())
    })
    .await
    .unwrap();
    // an administrator certificate the CA issued for someone the directory does not list,
    // and a listed administrator whose certificate is revoked
    let mut pki = henvis_pki::DevPki::open(d.pki_dir()).unwrap();
    pki.issue(&admin("admin-9"), henvis_pki::Validity::days(30)).unwrap();
    henvis_pki::DevPki::open(d.pki_dir())
        .unwrap()
        .revoke(&admin("admin-3"))
        .unwrap();
    // the service reads the revocation list again within a second
    wait_for("the revocation to be read", LIMIT, || async {
        match henvis_runtime::tls::connect_as(&d.admin.to_string(), d.pki_dir(), &admin("admin-3")).await {
            Err(_) => Some(()),
            Ok(ch) => AdminServiceClient::new(ch)
                .who_am_i(WhoAmIRequest {})
                .await
                .err()
                .map(|_| ()),
        }
    })
    .await
    .unwrap();
    // administrators have no NATS user: only the admin service's certificate does
    assert!(
        henvis_tests::connect_as(&d.nats.url(), d.pki_dir(), &admin("admin-1"))
            .await
            .is_err(),
        "an administrator's certificate opens no NATS connection"
    );
    let audit_before = d.read_all("AUDIT", "henvis.audit.>").await.unwrap().len();
    let text = version("gov-x");
    let r = |x: rule_set_ref::Ref| Some(RuleSetRef { r#ref: Some(x) });
    let callers = [
        (
            "an agency",
            Principal::Agency(henvis_domain::AgencyId::parse("kommune-101").unwrap()),
        ),
        (
            "a contact person",
            Principal::Person(henvis_domain::PersonId::parse("politi-fyn-kp1").unwrap()),
        ),
        ("an administrator the directory does not list", admin("admin-9")),
        ("an administrator the directory disabled", admin("admin-2")),
        ("an administrator whose certificate is revoked", admin("admin-3")),
    ];
    let mut outcomes = Vec::new();
    for (who, principal) in &callers {
        let mut c = match henvis_runtime::tls::connect_as(&d.admin.to_string(), d.pki_dir(), principal).await {
            Ok(ch) => AdminServiceClient::new(ch),
            Err(e) => {
                outcomes.push((*who, "connect", format!("refused: {e}")));
                continue;
            }
        };
        let codes: Vec<(&str, Result<(), tonic::Status>)> =
            vec![
            ("WhoAmI", c.who_am_i(WhoAmIRequest {}).await.map(|_| ())),
            (
                "ProposeRuleSet",
                c.propose_rule_set(ProposeRuleSetRequest {
                    file: "x.toml".into(),
                    text: text.clone(),
                    note: String::new(),
                })
                .await
                .map(|_| ()),
            ),
            (
                "ProposeRollback",
                c.propose_rollback(ProposeRollbackRequest {
                    proposal_id: p.proposal_id,
                    note: String::new(),
                })
                .await
                .map(|_| ()),
            ),
            (
                "ApproveRuleSet",
                c.approve_rule_set(ApproveRuleSetRequest {
                    proposal_id: p.proposal_id,
                })
                .await
                .map(|_| ()),
            ),
            (
                "RejectRuleSet",
                c.reject_rule_set(RejectRuleSetRequest {
                    proposal_id: p.proposal_id,
                    reason: "no".into(),
                })
                .await
                .map(|_| ()),
            ),
            (
                "BreakGlass",
                c.break_glass(BreakGlassRequest {
                    proposal_id: p.proposal_id,
                    reason: "now".into(),
                })
                .await
                .map(|_| ()),
            ),
            (
                "ReviewBreakGlass",
                c.review_break_glass(ReviewBreakGlassRequest {
                    proposal_id: p.proposal_id,
                    note: "ok".into(),
                })
                .await
                .map(|_| ()),
            ),
            (
                "ListRuleSets",
                c.list_rule_sets(ListRuleSetsRequest {}).await.map(|_| ()),
            ),
            (
                "GetRuleSet",
                c.get_rule_set(GetRuleSetRequest {
                    proposal_id: p.proposal_id,
                })
                .await
                .map(|_| ()),
            ),
            (
                "DiffRuleSets",
                c.diff_rule_sets(DiffRuleSetsRequest {
                    from: r(rule_set_ref::Ref::Live(true)),
                    to: r(rule_set_ref::Ref::ProposalId(p.proposal_id)),
                })
                .await
                .map(|_| ()),
            ),
            (
                "Simulate",
                c.simulate(SimulateRequest {
                    sender_agency_id: "ngo-hopenow".into(),
                    event_json:
                        r#"{"suspectedVictimReported":{"municipalityCode":"101","observedAt":"2026-09-21T00:00:00Z"}}"#
                            .into(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            ),
            (
                "WhatIf",
                c.what_if(WhatIfRequest {
                    candidate: r(rule_set_ref::Ref::ProposalId(p.proposal_id)),
                    days: 1,
                    max_items: 10,
                    offset: 0,
                })
                .await
                .map(|_| ()),
            ),
            (
                "CaseAudit",
                c.case_audit(CaseAuditRequest { case_id: case.clone() })
                    .await
                    .map(|_| ()),
            ),
            ("AdminAlerts", c.admin_alerts(AdminAlertsRequest {}).await.map(|_| ())),
            (
                "ProposeDirectoryChange",
                c.propose_directory_change(henvis_proto::henvis::admin::v1::ProposeDirectoryChangeRequest {
                    changes: vec![henvis_proto::henvis::admin::v1::DirectoryChange {
                        change: Some(Change::AddAdministrator("admin-8".into())),
                    }],
                    note: String::new(),
                })
                .await
                .map(|_| ()),
            ),
            (
                "ApproveDirectoryChange",
                c.approve_directory_change(henvis_proto::henvis::admin::v1::ApproveDirectoryChangeRequest {
                    proposal_id: pending.proposal_id,
                })
                .await
                .map(|_| ()),
            ),
            (
                "RejectDirectoryChange",
                c.reject_directory_change(RejectDirectoryChangeRequest {
                    proposal_id: pending.proposal_id,
                    reason: "no".into(),
                })
                .await
                .map(|_| ()),
            ),
            (
                "ListDirectoryChanges",
                c.list_directory_changes(ListDirectoryChangesRequest {}).await.map(|_| ()),
            ),
            (
                "NatsAuthorization",
                c.nats_authorization(NatsAuthorizationRequest {}).await.map(|_| ()),
            ),
        ];
        for (rpc, result) in codes {
            let outcome = match result {
                Ok(()) => "ANSWERED".to_owned(),
                Err(s) => format!("{:?}", s.code()),
            };
            outcomes.push((*who, rpc, outcome));
        }
    }
    let mut by_caller: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (who, rpc, outcome) in &outcomes {
        by_caller.entry(who).or_default().insert(outcome.clone());
        let expected_denied = *who != "an administrator whose certificate is revoked";
        if expected_denied {
            assert_eq!(outcome, "PermissionDenied", "{who} calling {rpc}");
        } else {
            assert!(
                *rpc == "connect" || ["Unavailable", "Unknown", "Unauthenticated"].contains(&outcome.as_str()),
                "{who} calling {rpc}: {outcome}"
            );
        }
    }
    println!(
        "admin service negative matrix: {by_caller:?} ({} calls)",
        outcomes.len()
    );
    // nothing changed
    let changes = client(&d, "admin-1")
        .await
        .list_directory_changes(ListDirectoryChangesRequest {})
        .await
        .unwrap()
        .into_inner()
        .proposals;
    assert_eq!(changes.len(), 2);
    assert!(
        changes
            .iter()
            .any(|c| c.proposal_id == pending.proposal_id && c.state == RuleSetState::Proposed as i32)
    );
    let listed = client(&d, "admin-1")
        .await
        .list_rule_sets(ListRuleSetsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.versions.len(), 1);
    assert_eq!(listed.versions[0].state, RuleSetState::Proposed as i32);
    assert_eq!(d.read_all("AUDIT", "henvis.audit.>").await.unwrap().len(), audit_before);
}

/// A client of the common API as `principal` (for agencies the harness's static directory
/// does not know).
async fn client_as(d: &Deployment, sector: Sector, principal: &Principal) -> henvis_tests::Client {
    let channel = henvis_runtime::tls::connect_as(&d.endpoints[&sector].to_string(), d.pki_dir(), principal)
        .await
        .unwrap();
    henvis_tests::Client {
        inner: henvis_proto::henvis::broker::v1::referral_service_client::ReferralServiceClient::new(channel),
    }
}

async fn propose_change(
    d: &Deployment,
    by: &str,
    change: henvis_proto::henvis::admin::v1::directory_change::Change,
) -> Result<henvis_proto::henvis::admin::v1::DirectoryChangeProposal, tonic::Status> {
    client(d, by)
        .await
        .propose_directory_change(henvis_proto::henvis::admin::v1::ProposeDirectoryChangeRequest {
            changes: vec![henvis_proto::henvis::admin::v1::DirectoryChange { change: Some(change) }],
            note: "test".into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn approve_change(
    d: &Deployment,
    by: &str,
    id: u64,
) -> Result<henvis_proto::henvis::admin::v1::DirectoryChangeProposal, tonic::Status> {
    client(d, by)
        .await
        .approve_directory_change(henvis_proto::henvis::admin::v1::ApproveDirectoryChangeRequest { proposal_id: id })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_changes_apply_in_every_running_service_under_four_eyes() {
    use henvis_proto::henvis::{
        admin::v1::{NewAgency, PersonOfAgency, directory_change::Change},
        police::v1::{ListAlertsRequest, alert_service_client::AlertServiceClient},
    };
    let d = Deployment::start().await.unwrap();
    let mut pki = henvis_pki::DevPki::open(d.pki_dir()).unwrap();
    let new_ngo = Principal::Agency(henvis_domain::AgencyId::parse("ngo-nyt").unwrap());
    let new_kp = Principal::Person(henvis_domain::PersonId::parse("politi-fyn-kp9").unwrap());
    for p in [&new_ngo, &new_kp, &admin("admin-4")] {
        pki.issue(p, henvis_pki::Validity::days(30)).unwrap();
    }
    // unknown to the directory: refused
    let mut nyt = client_as(&d, Sector::Ngo, &new_ngo).await;
    let e = submit(&mut nyt, "before", "", report("101")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    // proposed by admin-1; not approvable by admin-1; a nonsensical change refused by name
    let p = propose_change(
        &d,
        "admin-1",
        Change::AddAgency(NewAgency {
            agency_id: "ngo-nyt".into(),
            name: "Nyt Netværk".into(),
            sector: "ngo".into(),
        }),
    )
    .await
    .unwrap();
    assert_eq!(
        approve_change(&d, "admin-1", p.proposal_id).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let e = propose_change(
        &d,
        "admin-1",
        Change::AddContactPerson(PersonOfAgency {
            person_id: "politi-fyn-kp9".into(),
            agency_id: "kommune-101".into(),
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("changes[0]") && e.message().contains("not a police agency"),
        "{}",
        e.message()
    );
    approve_change(&d, "admin-2", p.proposal_id).await.unwrap();
    // the operator's step: NATS rights for the new agency's subjects, reloaded without a
    // restart
    let auth = client(&d, "admin-3")
        .await
        .nats_authorization(henvis_proto::henvis::admin::v1::NatsAuthorizationRequest {})
        .await
        .unwrap()
        .into_inner()
        .config;
    assert!(auth.contains("henvis.quota.ngo-nyt"), "the new agency's rights");
    let mut d = d;
    d.nats.reload_authorization(&auth).await.unwrap();
    // the NGO service and the router take it without a restart: the new agency reports
    let opened = wait_for("the new agency to be admitted", LIMIT, || {
        let nyt = &nyt;
        async move {
            let mut c = henvis_tests::Client {
                inner: nyt.inner.clone(),
            };
            submit(&mut c, "after", "", report("101")).await.ok()
        }
    })
    .await
    .unwrap();
    let status = routed(&mut nyt, &opened.event_id).await;
    let delivered: BTreeSet<&str> = status
        .recipients
        .iter()
        .map(|r| r.recipient_agency_id.as_str())
        .collect();
    assert_eq!(delivered, BTreeSet::from(["kommune-101", "politi-koebenhavn"]));

    // a disabled agency is refused at once, and receives nothing
    let mut hopenow = d.client(Sector::Ngo, "ngo-hopenow").await.unwrap();
    submit(&mut hopenow, "still-in", "", report("147")).await.unwrap();
    let p = propose_change(&d, "admin-2", Change::DisableAgency("ngo-hopenow".into()))
        .await
        .unwrap();
    approve_change(&d, "admin-3", p.proposal_id).await.unwrap();
    let p = propose_change(&d, "admin-2", Change::DisableAgency("kommune-147".into()))
        .await
        .unwrap();
    approve_change(&d, "admin-1", p.proposal_id).await.unwrap();
    wait_for("the disabled agency to be refused", LIMIT, || {
        let c = hopenow.inner.clone();
        async move {
            let mut c = henvis_tests::Client { inner: c };
            let e = submit(&mut c, "refused", "", report("147")).await.err()?;
            (e.code() == Code::Unauthenticated).then_some(())
        }
    })
    .await
    .unwrap();
    let r = submit(&mut nyt, "to-147", "", report("147")).await.unwrap();
    let status = routed(&mut nyt, &r.event_id).await;
    let got: BTreeSet<&str> = status
        .recipients
        .iter()
        .filter(|x| x.state != henvis_proto::henvis::broker::v1::DeliveryState::Withheld as i32)
        .map(|x| x.recipient_agency_id.as_str())
        .collect();
    assert_eq!(
        got,
        BTreeSet::from(["politi-koebenhavn"]),
        "nothing to the disabled municipality: {status:?}"
    );
    let decision = decided_reasons(&d, &r.event_id).await;
    assert!(
        decision.contains(&("kommune-147".to_owned(), "recipient_disabled".to_owned())),
        "{decision:?}"
    );

    // a new contact person, then moved to another district: the police service follows
    let p = propose_change(
        &d,
        "admin-3",
        Change::AddContactPerson(PersonOfAgency {
            person_id: "politi-fyn-kp9".into(),
            agency_id: "politi-fyn".into(),
        }),
    )
    .await
    .unwrap();
    approve_change(&d, "admin-1", p.proposal_id).await.unwrap();
    let alerts_of = |who: Principal| {
        let d = &d;
        async move {
            let ch = henvis_runtime::tls::connect_as(&d.endpoints[&Sector::Police].to_string(), d.pki_dir(), &who)
                .await
                .ok()?;
            AlertServiceClient::new(ch)
                .list_alerts(ListAlertsRequest {})
                .await
                .ok()
                .map(|r| r.into_inner().alerts)
        }
    };
    let fyn = wait_for("the new contact person to be admitted", LIMIT, || {
        alerts_of(new_kp.clone())
    })
    .await
    .unwrap();
    assert!(fyn.iter().all(|a| a.district_agency_id == "politi-fyn"), "{fyn:?}");
    let p = propose_change(
        &d,
        "admin-3",
        Change::AssignContactPerson(PersonOfAgency {
            person_id: "politi-fyn-kp9".into(),
            agency_id: "politi-koebenhavn".into(),
        }),
    )
    .await
    .unwrap();
    approve_change(&d, "admin-2", p.proposal_id).await.unwrap();
    let kbh = wait_for("the contact person to see Copenhagen's alerts", LIMIT, || async {
        let a = alerts_of(new_kp.clone()).await?;
        (!a.is_empty() && a.iter().all(|x| x.district_agency_id == "politi-koebenhavn")).then_some(a)
    })
    .await
    .unwrap();

    // a new administrator, then disabled: refused by the admin service at once
    let p = propose_change(&d, "admin-1", Change::AddAdministrator("admin-4".into()))
        .await
        .unwrap();
    approve_change(&d, "admin-3", p.proposal_id).await.unwrap();
    wait_for("the new administrator to be admitted", LIMIT, || async {
        client(&d, "admin-4").await.who_am_i(WhoAmIRequest {}).await.ok()
    })
    .await
    .unwrap();
    let p = propose_change(&d, "admin-1", Change::DisablePerson("admin-4".into()))
        .await
        .unwrap();
    approve_change(&d, "admin-4", p.proposal_id).await.unwrap();
    wait_for("the disabled administrator to be refused", LIMIT, || async {
        let e = client(&d, "admin-4").await.who_am_i(WhoAmIRequest {}).await.err()?;
        (e.code() == Code::PermissionDenied).then_some(())
    })
    .await
    .unwrap();

    let steps: Vec<serde_json::Value> = d
        .read_all("AUDIT", "henvis.audit.rules")
        .await
        .unwrap()
        .iter()
        .map(|(_, b)| serde_json::from_slice(b).unwrap())
        .collect();
    let approved = steps
        .iter()
        .filter(|s| s["kind"] == "directory_change_approved")
        .count();
    let proposed = steps
        .iter()
        .filter(|s| s["kind"] == "directory_change_proposed")
        .count();
    assert_eq!((proposed, approved), (7, 7));
    println!(
        "directory under four eyes: 7 changes proposed and approved, applied by the running NGO, police, router and admin services; a new agency reported, a disabled one refused and withheld as a recipient, a contact person moved to Copenhagen ({} alerts), an administrator added and disabled",
        kbh.len()
    );
}

/// (recipient, reason) of what the last decision about `event_id` withheld.
async fn decided_reasons(d: &Deployment, event_id: &str) -> Vec<(String, String)> {
    d.read_all("AUDIT", "henvis.audit.decision.>")
        .await
        .unwrap()
        .iter()
        .filter_map(|(_, b)| serde_json::from_slice::<serde_json::Value>(b).ok())
        .filter(|v| v["kind"] == "routing_decision" && v["event_id"] == event_id)
        .last()
        .map(|v| {
            v["withheld"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| {
                    (
                        w["agency"].as_str().unwrap_or_default().to_owned(),
                        w["reason"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The rule-set proposals the audit records (`rule_set_proposed`), by proposal id: how often.
async fn proposals_recorded(d: &Deployment) -> BTreeMap<u64, usize> {
    let mut n = BTreeMap::new();
    for (_, body) in d.read_all("AUDIT", "henvis.audit.rules").await.unwrap() {
        let r: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if r["kind"] == "rule_set_proposed" {
            *n.entry(r["proposal"].as_u64().unwrap()).or_default() += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_stored_while_the_audit_refused_is_recorded_once_the_audit_is_back() {
    let mut d = Deployment::start().await.unwrap();
    // the admin service may no longer write governance records (as when the audit stream
    // refuses): its deny list, in the shipped authorization, gains the rules' subject
    let shipped = include_str!("../../deploy/nats/auth.conf");
    let at = shipped.find("user: \"henvis://service/admin\"").unwrap();
    let (before, after) = shipped.split_at(at);
    let denied = format!(
        "{before}{}",
        after.replacen(
            r#"deny: ["$JS.API.STREAM.DELETE.AUDIT""#,
            r#"deny: ["henvis.audit.rules", "$JS.API.STREAM.DELETE.AUDIT""#,
            1
        )
    );
    assert_ne!(denied, shipped, "the admin service's deny list found");
    d.nats.reload_authorization(&denied).await.unwrap();
    // the proposal is stored, its record refused: the administrator is told to try again
    let refused = propose(&d, "admin-1", "unrecorded.toml", &version("2026-11-30.unrecorded")).await;
    assert_eq!(refused.unwrap_err().code(), Code::Unavailable);
    let listed = client(&d, "admin-2")
        .await
        .list_rule_sets(ListRuleSetsRequest {})
        .await
        .unwrap()
        .into_inner()
        .versions;
    let stored = listed
        .iter()
        .find(|v| v.rule_set_version == "2026-11-30.unrecorded")
        .expect("the proposal stored")
        .proposal_id;
    assert_eq!(proposals_recorded(&d).await.get(&stored), None);
    // and the audit's verification says so
    let verified = client(&d, "admin-2")
        .await
        .verify_audit(henvis_proto::henvis::admin::v1::VerifyAuditRequest {
            trusted_checkpoints: vec![],
            completeness: true,
        })
        .await
        .unwrap()
        .into_inner()
        .completeness
        .unwrap();
    assert_eq!(verified.governance_steps_without_record, 1, "{verified:?}");

    // the audit takes records again: the running admin service records the proposal on its
    // next pass, and one started now (as after a crash) records nothing twice
    d.nats.reload_authorization(shipped).await.unwrap();
    wait_for("the proposal's audit record", LIMIT * 3, || async {
        (proposals_recorded(&d).await.get(&stored) == Some(&1)).then_some(())
    })
    .await
    .unwrap();
    d.start_admin().await.unwrap();
    assert_eq!(proposals_recorded(&d).await.get(&stored), Some(&1));
    let comp = crate::delivery::audit_complete(&d, "the refused proposal recorded").await;
    assert!(comp.governance_steps >= 1, "{comp:?}");
    println!("a proposal stored while the audit refused: recorded once when the audit was back");
}
