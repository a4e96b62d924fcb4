//! One child, one case, across agencies: the police in København and an NGO in Odense
//! report the same child independently, spelled differently; the broker proposes a link to
//! each case's municipality, naming the other case and its municipality only. Another child
//! of the same name but another birth date, and another child of the same birth date, are
//! not linked. Both sides confirm; the keyed tokens appear in no delivery, audit record,
//! status record or log; erasing a case removes its tokens and links.

use henvis_domain::Sector;
use henvis_proto::henvis::{
    admin::v1::{ApproveCaseErasureRequest, ProposeCaseErasureRequest},
    broker::v1::{AnswerCaseLinkRequest, CaseLink, CaseLinkState, ListCaseLinksRequest},
    events::v1::*,
};
use henvis_tests::{Client, Deployment, admin, wait_for};
use tonic::Code;

use crate::{LIMIT, policy::ev, routed, submit};

fn identity(municipality: &str, given: &str, family: &str, aliases: &[&str], dob: &str, nat: &[&str]) -> Event {
    ev(event::Kind::SuspectedVictimReported(SuspectedVictimReported {
        municipality_code: municipality.into(),
        observed_at: crate::policy::ts(0),
        given_name: given.into(),
        family_name: family.into(),
        aliases: aliases.iter().map(|s| (*s).to_owned()).collect(),
        claimed_date_of_birth: dob.into(),
        nationalities: nat.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }))
}

async fn open(c: &mut Client, key: &str, event: Event) -> String {
    let r = submit(c, key, "", event).await.unwrap();
    routed(c, &r.event_id).await;
    r.case_id
}

async fn links(c: &mut Client) -> Vec<CaseLink> {
    let r = c.req(ListCaseLinksRequest {});
    c.inner.list_case_links(r).await.unwrap().into_inner().links
}

async fn answer(c: &mut Client, link: &str, case: &str, confirm: bool) -> Result<CaseLink, tonic::Status> {
    let r = c.req(AnswerCaseLinkRequest {
        link_id: link.into(),
        case_id: case.into(),
        confirm,
    });
    c.inner.answer_case_link(r).await.map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_of_one_child_in_two_places_are_proposed_as_one_case_without_showing_either_identity() {
    let d = Deployment::start_with(henvis_tests::Options {
        // the routers sweep every 2 s (for the erasure at the end; no case is closed)
        closed_case_retention_secs: 2,
        ..henvis_tests::Options::default()
    })
    .await
    .unwrap();
    let mut police = d.client(Sector::Police, "politi-koebenhavn").await.unwrap();
    let mut hopenow = d.client(Sector::Ngo, "ngo-hopenow").await.unwrap();
    let mut redbarnet = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let a = open(
        &mut police,
        "a",
        identity("101", "Aleksandra Ștefania", "Popescu", &[], "2010-03-04", &["RO"]),
    )
    .await;
    // the same child in Odense: another spelling, the names the other way round, no nationality
    let b = open(
        &mut hopenow,
        "b",
        identity("461", "Popescu", "Alexandra Stefania", &["Sasha"], "2010-03-04", &[]),
    )
    .await;
    // other children: same names, another birth date; same birth date, other names
    let c = open(
        &mut redbarnet,
        "c",
        identity("101", "Aleksandra Ștefania", "Popescu", &[], "2011-03-04", &["RO"]),
    )
    .await;
    let e = open(
        &mut redbarnet,
        "e",
        identity("101", "Maria", "Ionescu", &["Sasha"], "2012-07-01", &["RO"]),
    )
    .await;

    // each side's municipality sees one link, to the other case and its municipality
    let mut kbh = d.client(Sector::Social, "kommune-101").await.unwrap();
    let mut odense = d.client(Sector::Social, "kommune-461").await.unwrap();
    let seen = wait_for("the link proposed", LIMIT, || async {
        let mut kbh = d.client(Sector::Social, "kommune-101").await.ok()?;
        let l = links(&mut kbh).await;
        (!l.is_empty()).then_some(l)
    })
    .await
    .unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let link = &seen[0];
    assert_eq!(
        (
            link.case_id.as_str(),
            link.other_case_id.as_str(),
            link.other_municipality_code.as_str(),
            link.state
        ),
        (a.as_str(), b.as_str(), "461", CaseLinkState::Proposed as i32)
    );
    assert!(
        link.matched_on.contains(&"names_and_birth_date".to_owned()),
        "{:?}",
        link.matched_on
    );
    let from_odense = links(&mut odense).await;
    assert_eq!(from_odense.len(), 1);
    assert_eq!(
        (
            from_odense[0].case_id.as_str(),
            from_odense[0].other_case_id.as_str(),
            from_odense[0].other_municipality_code.as_str()
        ),
        (b.as_str(), a.as_str(), "101")
    );
    // no false positive: one link in all, none for the other children
    let all_links = d
        .read_all("KV_henvis_linkage", "$KV.henvis_linkage.link.>")
        .await
        .unwrap();
    assert_eq!(
        all_links.len(),
        1,
        "one link in all (cases {c}, {e} must not be linked)"
    );

    // only a side's guardian or municipality answers for it
    assert!(links(&mut hopenow).await.is_empty(), "the reporting NGO sees no link");
    let refused = answer(&mut hopenow, &link.link_id, &b, true).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let wrong_side = answer(&mut kbh, &link.link_id, &c, true).await.unwrap_err();
    assert_eq!(wrong_side.code(), Code::NotFound);
    let bad = answer(&mut kbh, "not-a-link", &a, true).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("link_id"), "{}", bad.message());
    let half = answer(&mut kbh, &link.link_id, &a, true).await.unwrap();
    assert_eq!((half.state, half.answered), (CaseLinkState::Proposed as i32, true));
    let twice = answer(&mut kbh, &link.link_id, &a, false).await.unwrap_err();
    assert_eq!(twice.code(), Code::FailedPrecondition);
    let whole = answer(&mut odense, &link.link_id, &b, true).await.unwrap();
    assert_eq!(whole.state, CaseLinkState::Confirmed as i32);

    // the tokens never leave the broker: not in deliveries, status, audit or logs
    let tokens: Vec<String> = d
        .subjects("KV_henvis_linkage", "$KV.henvis_linkage.token.>")
        .await
        .unwrap()
        .into_keys()
        .map(|s| s.trim_start_matches("$KV.henvis_linkage.token.").to_owned())
        .collect();
    assert!(tokens.len() >= 6, "tokens of four reports: {}", tokens.len());
    let mut haystack = String::new();
    for (stream, filter) in [("STATUS", "henvis.status.>"), ("AUDIT", "henvis.audit.>")] {
        for (_, bytes) in d.read_all(stream, filter).await.unwrap() {
            haystack.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    let out = d.jetstream().await.unwrap().get_stream("OUT").await.unwrap();
    let state = out.get_info().await.unwrap().state;
    let mut deliveries = 0;
    for seq in state.first_sequence..=state.last_sequence {
        if let Ok(m) = out.get_raw_message(seq).await {
            haystack.push_str(&String::from_utf8_lossy(&d.opened(&m.payload).await.unwrap()));
            deliveries += 1;
        }
    }
    let logs = henvis_tests::captured_logs();
    assert!(logs.contains("link proposed"), "the logs were captured");
    haystack.push_str(&logs);
    let leaked = tokens.iter().filter(|t| haystack.contains(t.as_str())).count();
    assert_eq!(leaked, 0);
    // both cases' audits tell the story, ids only
    for case in [&a, &b] {
        let kinds: Vec<String> = d
            .audit(case)
            .await
            .unwrap()
            .iter()
            .filter_map(|(_, r)| r["kind"].as_str().map(str::to_owned))
            .filter(|k| k.starts_with("case_link"))
            .collect();
        assert_eq!(kinds, ["case_link_proposed", "case_link_answered"], "case {case}");
    }

    // erasing case B removes its tokens and its link
    let mut admin1 = d.admin_client(&admin("admin-1")).await.unwrap();
    let mut admin2 = d.admin_client(&admin("admin-2")).await.unwrap();
    let p = admin1
        .propose_case_erasure(ProposeCaseErasureRequest {
            case_id: b.clone(),
            reason: "the guardian's request".into(),
            police_hold_override: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    admin2
        .approve_case_erasure(ApproveCaseErasureRequest {
            erasure_id: p.erasure_id,
        })
        .await
        .unwrap();
    // (a purged key leaves an empty marker: what is left must be empty)
    let d = &d;
    let held = |filter: String| async move {
        d.read_all("KV_henvis_linkage", &filter)
            .await
            .ok()
            .map(|v| v.iter().filter(|(_, p)| !p.is_empty()).count())
    };
    wait_for("case B's tokens and link gone", LIMIT, || async {
        let own = held(format!("$KV.henvis_linkage.case.{b}")).await?;
        let links = held("$KV.henvis_linkage.link.>".to_owned()).await?;
        let listed = d
            .read_all("KV_henvis_linkage", "$KV.henvis_linkage.token.>")
            .await
            .ok()?
            .iter()
            .any(|(_, p)| String::from_utf8_lossy(p).contains(b.as_str()));
        (own == 0 && links == 0 && !listed).then_some(())
    })
    .await
    .unwrap();
    assert!(links(&mut kbh).await.is_empty());
    println!(
        "linkage: 4 reports, 1 link proposed (names_and_birth_date across spellings and name order), 0 for same names with another birth date or another child; both sides confirmed; {} tokens, found in 0 of {deliveries} deliveries, the status and audit records and the logs; erased case's tokens and link removed",
        tokens.len()
    );
}
