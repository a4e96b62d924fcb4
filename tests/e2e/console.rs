//! The web console in a real headless Chromium that signs in with a person's certificate:
//! a contact person sees an alert arrive live, claims it and opens its details (a read
//! receipt in the audit); a colleague sees it claimed; nobody sees what they may not; a
//! forged form is refused. Screenshots go to target/screenshots/.

use std::{net::SocketAddr, time::Duration};

use fantoccini::Locator;
use henvis_domain::{PersonId, Principal, Sector};
use henvis_pki::DevPki;
use henvis_tests::{Deployment, browser::Browser, free_addr, wait_for};

use crate::{LIMIT, submit};

fn person(id: &str) -> Principal {
    Principal::Person(PersonId::parse(id).unwrap())
}

async fn with_console(d: &mut Deployment) -> (SocketAddr, henvis_tests::SectorProcess) {
    let console = free_addr().unwrap();
    let police = d
        .run_sector_as_process_with(Sector::Police, &[("HENVIS_CONSOLE_LISTEN", console.to_string())])
        .await
        .unwrap();
    (console, police)
}

/// Waits until the page's `<main>` satisfies `ok`; returns its text.
async fn main_until(b: &Browser, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let got = wait_for(what, LIMIT, || async {
        let text = b.main_text().await.ok()?;
        ok(&text).then_some(text)
    })
    .await;
    match got {
        Ok(t) => t,
        Err(e) => panic!("{e}; the page says: {:?}", b.main_text().await.ok()),
    }
}

/// Clicks the element `css` finds, again if the live feed replaced it in between (the page
/// re-renders its rows on every alert change).
async fn click(b: &Browser, css: &str) {
    wait_for(&format!("a click on {css}"), LIMIT, || async {
        b.client.find(Locator::Css(css)).await.ok()?.click().await.ok()
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_person_sees_an_alert_arrive_claims_opens_and_hands_it_over_and_the_colleague_closes_it() {
    let mut d = Deployment::start().await.unwrap();
    let (console, _police) = with_console(&mut d).await;
    let base = format!("https://127.0.0.1:{}", console.port());
    let kp1 = Browser::start(d.pki_dir(), Some(&person("politi-koebenhavn-kp1")))
        .await
        .unwrap();
    kp1.client.goto(&format!("{base}/alerts?lang=en")).await.unwrap();
    let header = kp1
        .client
        .find(Locator::Css("header"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(header.contains("politi-koebenhavn-kp1"), "{header}");
    main_until(&kp1, "the live feed", |t| t.contains("Live:")).await;
    kp1.screenshot("console-alerts-waiting").await.unwrap();

    // an NGO reports a child in København: the alert appears without a reload
    let mut ngo = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let r = submit(&mut ngo, "console-1", "", crate::report("101")).await.unwrap();
    let row = format!("tr[data-alert='{}']", r.event_id);
    let arrived = std::time::Instant::now();
    wait_for("the alert in the open page", LIMIT, || {
        let c = kp1.client.clone();
        let row = row.clone();
        async move { c.find(Locator::Css(&row)).await.ok() }
    })
    .await
    .unwrap();
    println!(
        "the alert appeared in the open page {:.1} s after Submit",
        arrived.elapsed().as_secs_f64()
    );
    kp1.screenshot("console-alert-arrived").await.unwrap();

    // claimed with the row's button
    click(&kp1, &format!("{row} button")).await;
    let text = main_until(&kp1, "the claim", |t| t.contains("claimed (politi-koebenhavn-kp1)")).await;
    assert!(text.contains("claimed"), "{text}");

    // the details: the notice, and a read receipt in the audit
    click(&kp1, &format!("{row} a")).await;
    let details = main_until(&kp1, "the details", |t| t.contains("This access is logged")).await;
    assert!(
        details.contains("municipality_code") && details.contains("101"),
        "{details}"
    );
    let title = kp1.client.title().await.unwrap();
    assert_eq!(title, "henvis — Alert", "no child data in the title");
    let url = kp1.client.current_url().await.unwrap();
    assert_eq!(
        url.path(),
        format!("/alerts/{}", r.event_id),
        "only the alert id in the URL"
    );
    kp1.screenshot("console-alert-details").await.unwrap();
    let receipts = wait_for("the read receipt", LIMIT, || async {
        let audit = d.audit(&r.case_id).await.ok()?;
        let receipts: Vec<_> = audit
            .iter()
            .filter(|(_, rec)| rec["kind"] == "alert_details_read")
            .map(|(_, rec)| rec["person"].clone())
            .collect();
        (!receipts.is_empty()).then_some(receipts)
    })
    .await
    .unwrap();
    assert_eq!(receipts, vec![serde_json::json!("politi-koebenhavn-kp1")]);

    // handed over to a colleague of the district, who sees it as theirs (in Danish), with
    // nothing to claim, and closes it with its outcome
    kp1.client
        .goto(&format!("{base}/alerts/{}?lang=en", r.event_id))
        .await
        .unwrap();
    kp1.client
        .form(Locator::Css("form.hand-over"))
        .await
        .unwrap()
        .set_by_name("to_person_id", "politi-koebenhavn-kp2")
        .await
        .unwrap()
        .submit()
        .await
        .unwrap();
    main_until(&kp1, "the hand-over", |t| t.contains("claimed (politi-koebenhavn-kp2)")).await;
    let kp2 = Browser::start(d.pki_dir(), Some(&person("politi-koebenhavn-kp2")))
        .await
        .unwrap();
    kp2.client.goto(&format!("{base}/alerts?lang=da")).await.unwrap();
    let text = main_until(&kp2, "the colleague's list", |t| {
        t.contains("overtaget (politi-koebenhavn-kp2)")
    })
    .await;
    assert!(text.contains("Sagsadvarsler"), "{text}");
    assert!(
        kp2.client.find(Locator::Css(&format!("{row} button"))).await.is_err(),
        "a claimed alert offers no claim"
    );
    kp2.screenshot("console-colleague-holds-it").await.unwrap();
    kp2.client
        .goto(&format!("{base}/alerts/{}?lang=en", r.event_id))
        .await
        .unwrap();
    kp2.client
        .form(Locator::Css("form.close"))
        .await
        .unwrap()
        .set_by_name("outcome", "child-safe")
        .await
        .unwrap()
        .submit()
        .await
        .unwrap();
    let text = main_until(&kp2, "the list without it", |t| t.contains("Live:")).await;
    assert!(kp2.client.find(Locator::Css(&row)).await.is_err(), "closed: {text}");
    kp1.close().await;
    kp2.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_nothing_to_the_uncertified_the_revoked_or_another_district_and_refuses_a_forged_form() {
    let mut d = Deployment::start().await.unwrap();
    let (console, _police) = with_console(&mut d).await;
    let base = format!("https://127.0.0.1:{}", console.port());
    let mut ngo = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let r = submit(&mut ngo, "console-2", "", crate::report("101")).await.unwrap();
    crate::routed(&mut ngo, &r.event_id).await;

    // no certificate: told to present one, nothing else
    let nobody = Browser::start(d.pki_dir(), None).await.unwrap();
    nobody.client.goto(&format!("{base}/alerts?lang=en")).await.unwrap();
    let text = main_until(&nobody, "the refusal", |t| {
        t.contains("Present your employee certificate")
    })
    .await;
    assert!(!text.contains(&r.event_id), "{text}");
    nobody
        .client
        .goto(&format!("{base}/alerts/{}", r.event_id))
        .await
        .unwrap();
    let text = main_until(&nobody, "the refusal", |t| {
        t.contains("Present your employee certificate")
    })
    .await;
    assert!(!text.contains("101"), "{text}");
    nobody.screenshot("console-no-certificate").await.unwrap();
    nobody.close().await;

    // another district: neither in the list nor by its address
    let bornholm = Browser::start(d.pki_dir(), Some(&person("politi-bornholm-kp1")))
        .await
        .unwrap();
    bornholm.client.goto(&format!("{base}/alerts?lang=en")).await.unwrap();
    let text = main_until(&bornholm, "the list", |t| {
        t.contains("Live:") || t.contains("No alerts")
    })
    .await;
    assert!(!text.contains(&r.event_id), "{text}");
    bornholm
        .client
        .goto(&format!("{base}/alerts/{}", r.event_id))
        .await
        .unwrap();
    let text = main_until(&bornholm, "the refusal", |t| t.contains("Not allowed")).await;
    assert!(!text.contains("municipality_code"), "{text}");
    bornholm.close().await;

    // a forged form (no token): refused, the alert still open
    let kp1 = Browser::start(d.pki_dir(), Some(&person("politi-koebenhavn-kp1")))
        .await
        .unwrap();
    kp1.client.goto(&format!("{base}/alerts?lang=en")).await.unwrap();
    main_until(&kp1, "the list", |t| {
        t.contains(&r.event_id) || t.contains("Urgent") || t.contains("Normal")
    })
    .await;
    kp1.client
        .execute(
            "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0]; \
             document.body.appendChild(f); f.submit();",
            vec![serde_json::json!(format!("/alerts/{}/claim", r.event_id))],
        )
        .await
        .unwrap();
    main_until(&kp1, "the forged form's refusal", |t| {
        t.contains("not sent from this console")
    })
    .await;
    kp1.client.goto(&format!("{base}/alerts?lang=en")).await.unwrap();
    let text = main_until(&kp1, "the list", |t| t.contains("open")).await;
    assert!(!text.contains("claimed (politi-koebenhavn-kp1)"), "{text}");
    kp1.close().await;

    // a revoked certificate: refused on the next request
    let kp3 = Browser::start(d.pki_dir(), Some(&person("politi-koebenhavn-kp3")))
        .await
        .unwrap();
    kp3.client.goto(&format!("{base}/alerts?lang=en")).await.unwrap();
    main_until(&kp3, "the list", |t| t.contains("Live:") || t.contains("Connecting")).await;
    DevPki::open(d.pki_dir())
        .unwrap()
        .revoke(&person("politi-koebenhavn-kp3"))
        .unwrap();
    let text = wait_for("the revocation in the console", Duration::from_secs(30), || async {
        kp3.client.goto(&format!("{base}/alerts?lang=en")).await.ok()?;
        let t = kp3.main_text().await.ok()?;
        t.contains("Present your employee certificate").then_some(t)
    })
    .await
    .unwrap();
    assert!(!text.contains(&r.event_id), "{text}");
    kp3.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guardian_records_and_withdraws_consent_in_the_console_and_the_next_referral_is_withheld() {
    use henvis_domain::AgencyId;
    use henvis_proto::henvis::broker::v1::DeliveryState;
    let mut d = Deployment::start().await.unwrap();
    let console = free_addr().unwrap();
    let _ngo = d
        .run_sector_as_process_with(Sector::Ngo, &[("HENVIS_CONSOLE_LISTEN", console.to_string())])
        .await
        .unwrap();
    let base = format!("https://127.0.0.1:{}", console.port());
    let (case, _kbh) = crate::policy::case_with_guardian(&d, "ngo-redbarnet").await;
    let guardian_id = Principal::Agency(AgencyId::parse("ngo-redbarnet").unwrap());
    let guardian = Browser::start(d.pki_dir(), Some(&guardian_id)).await.unwrap();

    // the guardian finds the case in its list of cases and records a consent for the
    // municipality
    guardian.client.goto(&format!("{base}/cases?lang=en")).await.unwrap();
    let row = guardian
        .client
        .find(Locator::Css(&format!("tr[data-case='{case}']")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(row.contains("101") && row.contains("open"), "{row}");
    click(&guardian, &format!("tr[data-case='{case}'] a")).await;
    main_until(&guardian, "the case", |t| {
        t.contains("What happened to the child's data")
    })
    .await;
    guardian
        .client
        .form(Locator::Css("form.record"))
        .await
        .unwrap()
        .set_by_name("consent_id", "c-console-1")
        .await
        .unwrap()
        .set_by_name("recipients", "kommune-101")
        .await
        .unwrap()
        .submit()
        .await
        .unwrap();
    main_until(&guardian, "the recorded consent", |t| t.contains("consent_recorded")).await;

    // a health assessment now reaches the municipality on that consent
    let mut region = d.client(Sector::Health, "region-hovedstaden").await.unwrap();
    let state_for = |s: &henvis_proto::henvis::broker::v1::GetStatusResponse| {
        s.recipients
            .iter()
            .find(|r| r.recipient_agency_id == "kommune-101")
            .map(|r| r.state)
    };
    let second = submit(&mut region, "ha-console-2", &case, crate::policy::health_assessment())
        .await
        .unwrap();
    let s = crate::routed(&mut region, &second.event_id).await;
    assert_eq!(state_for(&s), Some(DeliveryState::Stored as i32));
    let reload = format!("{base}/cases/{case}?lang=en");
    let shown = wait_for("the delivery on the consent", LIMIT, || async {
        guardian.client.goto(&reload).await.ok()?;
        let t = guardian.main_text().await.ok()?;
        t.contains("consent c-console-1").then_some(t)
    })
    .await
    .unwrap();
    assert!(shown.contains("kommune-101 (basic, health"), "{shown}");
    guardian.screenshot("console-guardian-case").await.unwrap();

    // the guardian withdraws it; the next referral is withheld, and the page says why
    click(&guardian, "button[data-withdraw='c-console-1']").await;
    main_until(&guardian, "the withdrawal", |t| t.contains("consent_withdrawn")).await;
    let third = submit(&mut region, "ha-console-3", &case, crate::policy::health_assessment())
        .await
        .unwrap();
    let s = crate::routed(&mut region, &third.event_id).await;
    assert_eq!(state_for(&s), None, "withheld: not even named to the sender");
    let row = format!("tr[data-event='{}']", third.event_id);
    let text = wait_for("the withheld referral in the timeline", LIMIT, || async {
        guardian.client.goto(&reload).await.ok()?;
        let el = guardian.client.find(Locator::Css(&row)).await.ok()?;
        let t = el.text().await.ok()?;
        t.contains("consent_withdrawn").then_some(t)
    })
    .await
    .unwrap();
    assert!(text.contains("kommune-101"), "{text}");
    let consent = guardian
        .client
        .find(Locator::Css("tr[data-consent='c-console-1']"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        consent.contains("kommune-101") && consent.contains("withdrawn"),
        "{consent}"
    );
    guardian.screenshot("console-guardian-withdrawn").await.unwrap();

    // the never-disclose list: a class name that does not exist is refused by line; a good
    // list is stored on the case and shown as it stands
    let save = |entries: &'static str| {
        let g = guardian.client.clone();
        async move {
            g.form(Locator::Css("form.never-disclose"))
                .await
                .unwrap()
                .set_by_name("entries", entries)
                .await
                .unwrap()
                .submit()
                .await
                .unwrap();
        }
    };
    save("kommune-101: WHEREABOUTS").await;
    let text = main_until(&guardian, "the refusal", |t| t.contains("Not allowed")).await;
    assert!(text.contains("never_disclose line 1: class `WHEREABOUTS`"), "{text}");
    guardian.client.goto(&reload).await.unwrap();
    save("kommune-101: LOCATION, HEALTH\nall except kommune-101, ngo-redbarnet: CRIMINAL").await;
    let list = wait_for("the never-disclose list on the case", LIMIT, || async {
        guardian.client.goto(&reload).await.ok()?;
        let t = guardian
            .client
            .find(Locator::Css("#never-disclose"))
            .await
            .ok()?
            .prop("value")
            .await
            .ok()??;
        (!t.is_empty()).then_some(t)
    })
    .await
    .unwrap();
    assert_eq!(
        list, "kommune-101: LOCATION, HEALTH\nall except kommune-101, ngo-redbarnet: CRIMINAL",
        "as stored by the router"
    );

    // the subject access report: every delivery and withholding, and that it was given
    click(&guardian, &format!("a[href='/cases/{case}/report']")).await;
    let report = main_until(&guardian, "the subject access report", |t| {
        t.contains("Subject access report") && t.contains(&third.event_id)
    })
    .await;
    assert!(
        report.contains("consent_withdrawn") && report.contains(&second.event_id) && report.contains("kommune-101"),
        "{report}"
    );
    guardian.screenshot("console-guardian-report").await.unwrap();

    // another agency may not look at the case
    let other = Browser::start(
        d.pki_dir(),
        Some(&Principal::Agency(AgencyId::parse("ngo-hopenow").unwrap())),
    )
    .await
    .unwrap();
    other.client.goto(&reload).await.unwrap();
    let text = main_until(&other, "the refusal", |t| t.contains("Not allowed")).await;
    assert!(!text.contains("kommune-101"), "{text}");
    // nor finds it in its list
    other.client.goto(&format!("{base}/cases?lang=en")).await.unwrap();
    let text = main_until(&other, "its list", |t| t.contains("Your cases as guardian")).await;
    assert!(!text.contains(&case), "{text}");
    other.close().await;
    guardian.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_reviews_a_proposal_diff_and_what_if_in_the_console_and_approves_it_and_nobody_else_may() {
    use henvis_proto::henvis::admin::v1::{ListRuleSetsRequest, ProposeRuleSetRequest, RuleSetState};
    use henvis_tests::admin;
    let d = Deployment::start().await.unwrap();
    let console = d.start_admin_console().await.unwrap();
    let base = format!("https://127.0.0.1:{}", console.port());

    // traffic for the what-if replay: a report routed to København's municipality
    let mut ngo = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let r = submit(&mut ngo, "console-admin-1", "", crate::report("101"))
        .await
        .unwrap();
    crate::routed(&mut ngo, &r.event_id).await;

    // admin-1 proposes that municipalities no longer see where the child is
    let candidate = crate::governance::untested("console-candidate").replacen(
        "classes = [\"IDENTITY\", \"LOCATION\", \"SOCIAL\", \"HEALTH\", \"EXPLOITATION\"]",
        "classes = [\"IDENTITY\", \"SOCIAL\", \"HEALTH\", \"EXPLOITATION\"]",
        1,
    );
    let proposed = d
        .admin_client(&admin("admin-1"))
        .await
        .unwrap()
        .propose_rule_set(ProposeRuleSetRequest {
            file: "console-candidate.toml".into(),
            text: candidate,
            note: "municipalities without the location".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let id = proposed.proposal_id;
    let proposal_page = format!("{base}/rules/{id}?lang=en");

    // the proposer sees it but may not approve it
    let admin1 = Browser::start(d.pki_dir(), Some(&admin("admin-1"))).await.unwrap();
    admin1.client.goto(&proposal_page).await.unwrap();
    let text = main_until(&admin1, "the proposal", |t| t.contains("You proposed this set")).await;
    assert!(admin1.client.find(Locator::Css("#approve")).await.is_err(), "{text}");
    admin1.close().await;

    // admin-2 finds it from the start page, reads the diff and the what-if
    let admin2 = Browser::start(d.pki_dir(), Some(&admin("admin-2"))).await.unwrap();
    admin2.client.goto(&format!("{base}/?lang=en")).await.unwrap();
    let text = main_until(&admin2, "the start page", |t| {
        t.contains("proposals waiting for a second administrator")
    })
    .await;
    assert!(text.contains("1 proposals waiting"), "{text}");
    click(&admin2, "main a[href='/rules']").await;
    click(&admin2, &format!("tr[data-proposal='{id}'] a")).await;
    let text = main_until(&admin2, "the diff", |t| t.contains("What changes against the live set")).await;
    let diff = admin2
        .client
        .find(Locator::Css("#diff"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        diff.contains("suspected_victim_reported")
            && diff.contains("municipality of the case")
            && diff.contains("classes lost")
            && diff.contains("LOCATION"),
        "{diff}"
    );
    assert!(text.contains("console-candidate"), "the version: {text}");
    // the replay covers the report routed above (its decision may reach the audit a moment
    // after its delivery: the page is loaded again until it does)
    let lost = wait_for("the what-if replay of the report", LIMIT, || async {
        admin2.client.goto(&proposal_page).await.ok()?;
        let n = admin2
            .client
            .find(Locator::Css("#wi-classes-lost"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (n.trim() != "0").then_some(n)
    })
    .await
    .unwrap();
    assert_eq!(lost.trim(), "1", "one delivery loses LOCATION");
    let rows = admin2
        .client
        .find(Locator::Css("#what-if-deliveries"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        rows.contains(&r.event_id) && rows.contains("kommune-101") && rows.contains("LOCATION"),
        "{rows}"
    );
    admin2.screenshot("console-admin-proposal").await.unwrap();

    // a forged post (no form token) rejects nothing
    admin2
        .client
        .execute(
            "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0]; \
             const i = document.createElement('input'); i.name = 'reason'; i.value = 'forged'; f.appendChild(i); \
             document.body.appendChild(f); f.submit();",
            vec![serde_json::json!(format!("/rules/{id}/reject"))],
        )
        .await
        .unwrap();
    main_until(&admin2, "the forged form's refusal", |t| {
        t.contains("not sent from this console")
    })
    .await;

    // admin-2 approves: the set routes now, approved by admin-2
    admin2.client.goto(&proposal_page).await.unwrap();
    main_until(&admin2, "the proposal", |t| t.contains("proposed")).await;
    click(&admin2, "#approve").await;
    // the proposal's page itself says "live" ("against the live set"): wait for its state
    // and approver, not for the word, or the page before the click's answer passes
    let text = main_until(&admin2, "the approval", |t| {
        t.contains("State\nlive") && t.contains("admin-2")
    })
    .await;
    assert!(text.contains("admin-2"), "{text}");
    admin2.screenshot("console-admin-approved").await.unwrap();
    admin2.close().await;
    let list = d
        .admin_client(&admin("admin-3"))
        .await
        .unwrap()
        .list_rule_sets(ListRuleSetsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.live_proposal_id, id);
    let approved = list.versions.iter().find(|v| v.proposal_id == id).unwrap();
    assert_eq!(approved.state, RuleSetState::Live as i32);
    assert_eq!(approved.approved_by, "admin-2");

    // a contact person's certificate, and none, open nothing on the administrators' console
    let kp1 = Browser::start(d.pki_dir(), Some(&person("politi-koebenhavn-kp1")))
        .await
        .unwrap();
    kp1.client.goto(&proposal_page).await.unwrap();
    let text = main_until(&kp1, "the refusal", |t| t.contains("Not allowed")).await;
    assert!(
        text.contains("administrators only") && !text.contains("LOCATION"),
        "{text}"
    );
    kp1.close().await;
    let nobody = Browser::start(d.pki_dir(), None).await.unwrap();
    nobody.client.goto(&format!("{base}/audit?lang=en")).await.unwrap();
    let text = main_until(&nobody, "the refusal", |t| {
        t.contains("Present your employee certificate")
    })
    .await;
    assert!(!text.contains("intact"), "{text}");
    nobody.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_administrators_console_shows_the_audit_verified_alerts_dead_letters_statistics_and_directory_changes() {
    use henvis_tests::admin;
    let d = Deployment::start().await.unwrap();
    let console = d.start_admin_console().await.unwrap();
    let base = format!("https://127.0.0.1:{}", console.port());
    let mut ngo = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let r = submit(&mut ngo, "console-admin-2", "", crate::report("101"))
        .await
        .unwrap();
    crate::routed(&mut ngo, &r.event_id).await;
    let admin3 = Browser::start(d.pki_dir(), Some(&admin("admin-3"))).await.unwrap();

    // the audit verified now (the routers chain and sign within seconds)
    let verdict = wait_for("the audit verified with its decision", LIMIT, || async {
        admin3.client.goto(&format!("{base}/audit?lang=en")).await.ok()?;
        let v = admin3
            .client
            .find(Locator::Css("#verdict"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let c = admin3
            .client
            .find(Locator::Css("#completeness"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (v.contains("Intact") && c.contains("Events decided\n1")).then_some((v, c))
    })
    .await;
    let (v, c) = match verdict {
        Ok(x) => x,
        Err(e) => panic!("{e}; the page says: {:?}", admin3.main_text().await.ok()),
    };
    assert!(v.contains("intact: "), "{v}");
    assert!(c.contains("Recipients without a stored delivery\n0"), "{c}");
    admin3.screenshot("console-admin-audit").await.unwrap();

    // alerts and dead letters, statistics, directory changes and erasures: each page answers
    for (path, expect) in [
        ("/alerts", "Administrator alerts, oldest first"),
        ("/stats?by=district&then=sender_sector", "district × sender_sector"),
        ("/directory", "Proposed changes of agencies"),
        ("/erasures", "Proposed erasures of cases"),
        ("/rules/new", "Propose a rule set"),
    ] {
        admin3.client.goto(&format!("{base}{path}")).await.unwrap();
        let text = main_until(&admin3, path, |t| t.contains(expect)).await;
        assert!(!text.contains("Not allowed"), "{path}: {text}");
    }
    admin3.screenshot("console-admin-stats").await.unwrap();
    admin3.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unclaimed_urgent_alert_counts_down_in_the_district_and_appears_live_at_the_national_unit() {
    use henvis_proto::henvis::events::v1::{Event, SuspectedVictimReported, event};
    let mut d = Deployment::start().await.unwrap();
    let console = free_addr().unwrap();
    let _police = d
        .run_sector_as_process_with(
            Sector::Police,
            &[
                ("HENVIS_CONSOLE_LISTEN", console.to_string()),
                ("HENVIS_URGENT_ALERT_DEADLINE_SECS", "8".to_owned()),
            ],
        )
        .await
        .unwrap();
    let base = format!("https://127.0.0.1:{}", console.port());
    // the national unit's duty officer has the page open before anything happens
    let nsk = Browser::start(d.pki_dir(), Some(&person("politi-nsk-kp1")))
        .await
        .unwrap();
    nsk.client.goto(&format!("{base}/alerts?lang=en")).await.unwrap();
    main_until(&nsk, "the live feed", |t| t.contains("Live:")).await;
    let district = Browser::start(d.pki_dir(), Some(&person("politi-sydoestjylland-kp1")))
        .await
        .unwrap();
    district.client.goto(&format!("{base}/alerts?lang=en")).await.unwrap();
    main_until(&district, "the live feed", |t| t.contains("Live:")).await;

    // a child in immediate danger in Skanderborg (Sydøstjyllands Politi)
    let mut ngo = d.client(Sector::Ngo, "ngo-hopenow").await.unwrap();
    let observed = henvis_runtime::unix_now() - 60;
    let danger = Event {
        kind: Some(event::Kind::SuspectedVictimReported(SuspectedVictimReported {
            municipality_code: "746".into(),
            observed_at: Some(prost_types::Timestamp {
                seconds: observed,
                nanos: 0,
            }),
            immediate_danger: true,
            ..Default::default()
        })),
    };
    let r = submit(&mut ngo, "console-danger", "", danger).await.unwrap();
    let row = format!("tr[data-alert='{}']", r.event_id);
    // the district sees it urgent, its deadline counting down
    let countdown = wait_for("the urgent alert with its countdown", LIMIT, || async {
        let el = district
            .client
            .find(Locator::Css(&format!("{row} .countdown")))
            .await
            .ok()?;
        let t = el.text().await.ok()?;
        t.contains(':').then_some(t)
    })
    .await
    .unwrap();
    let row_text = district
        .client
        .find(Locator::Css(&row))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(row_text.contains("Urgent"), "{row_text}");
    district.screenshot("console-urgent-countdown").await.unwrap();
    println!("the district's countdown showed {countdown}");

    // nobody claims it: it appears at the national unit without a reload, escalated
    let escalated = wait_for("the escalated alert at the national unit", LIMIT, || async {
        let t = nsk.client.find(Locator::Css(&row)).await.ok()?.text().await.ok()?;
        t.contains("escalated from politi-sydoestjylland").then_some(t)
    })
    .await
    .unwrap();
    assert!(escalated.contains("Urgent"), "{escalated}");
    nsk.screenshot("console-escalated-national-unit").await.unwrap();
    // and the duty officer may take it
    click(&nsk, &format!("{row} button")).await;
    let claimed = wait_for("the claim at the national unit", LIMIT, || async {
        let t = nsk.client.find(Locator::Css(&row)).await.ok()?.text().await.ok()?;
        t.contains("politi-nsk-kp1").then_some(t)
    })
    .await
    .unwrap();
    assert!(claimed.contains("claimed"), "{claimed}");
    nsk.close().await;
    district.close().await;
}

/// The violations axe-core finds on the open page, as `path: violation` lines.
async fn audit_page(b: &Browser, path: &str, found: &mut Vec<String>) {
    let violations = b.accessibility_violations().await.unwrap();
    println!("{path}: {} accessibility violation(s)", violations.len());
    found.extend(violations.into_iter().map(|v| format!("{path}: {v}")));
}

/// Presses `key` on whatever has the focus.
async fn press(b: &Browser, key: fantoccini::key::Key) {
    use fantoccini::actions::{InputSource as _, KeyAction, KeyActions};
    let keys = KeyActions::new("keyboard".into())
        .then(KeyAction::Down { value: key.into() })
        .then(KeyAction::Up { value: key.into() });
    b.client.perform_actions(keys).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_console_page_passes_an_accessibility_audit_and_an_alert_is_claimed_with_the_keyboard_alone() {
    use henvis_domain::AgencyId;
    use henvis_proto::henvis::admin::v1::ProposeRuleSetRequest;
    use henvis_tests::admin;
    let mut d = Deployment::start().await.unwrap();
    let (police_console, _police) = with_console(&mut d).await;
    let ngo_console = free_addr().unwrap();
    let _ngo = d
        .run_sector_as_process_with(Sector::Ngo, &[("HENVIS_CONSOLE_LISTEN", ngo_console.to_string())])
        .await
        .unwrap();
    let admin_console = d.start_admin_console().await.unwrap();
    let police = format!("https://127.0.0.1:{}", police_console.port());
    let ngo = format!("https://127.0.0.1:{}", ngo_console.port());
    let admin_base = format!("https://127.0.0.1:{}", admin_console.port());
    let (case, _kbh) = crate::policy::case_with_guardian(&d, "ngo-redbarnet").await;
    let proposed = d
        .admin_client(&admin("admin-1"))
        .await
        .unwrap()
        .propose_rule_set(ProposeRuleSetRequest {
            file: "a11y.toml".into(),
            text: crate::governance::untested("a11y"),
            note: "accessibility audit".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut found = Vec::new();

    // the contact person's pages, and claiming an alert with Tab and Enter only
    let kp1 = Browser::start(d.pki_dir(), Some(&person("politi-koebenhavn-kp1")))
        .await
        .unwrap();
    kp1.client.goto(&format!("{police}/alerts?lang=en")).await.unwrap();
    let mut reporter = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let r = submit(&mut reporter, "a11y-1", "", crate::report("101")).await.unwrap();
    let row = format!("tr[data-alert='{}']", r.event_id);
    wait_for("the alert in the page", LIMIT, || async {
        kp1.client.find(Locator::Css(&row)).await.ok()
    })
    .await
    .unwrap();
    audit_page(&kp1, "police /alerts", &mut found).await;
    let target = format!("{}:BUTTON", r.event_id);
    let mut tabs = 0;
    loop {
        press(&kp1, fantoccini::key::Key::Tab).await;
        tabs += 1;
        let focused = kp1
            .client
            .execute(
                "const e = document.activeElement; const tr = e && e.closest('tr'); \
                 return (tr ? tr.dataset.alert : '') + ':' + (e ? e.tagName : '');",
                vec![],
            )
            .await
            .unwrap();
        if focused.as_str() == Some(target.as_str()) {
            break;
        }
        assert!(
            tabs < 40,
            "the claim button is reachable with Tab (last focus {focused})"
        );
    }
    press(&kp1, fantoccini::key::Key::Enter).await;
    wait_for("the claim made with the keyboard", LIMIT, || async {
        let t = kp1.client.find(Locator::Css(&row)).await.ok()?.text().await.ok()?;
        t.contains("claimed (politi-koebenhavn-kp1)").then_some(())
    })
    .await
    .unwrap();
    println!("claimed with {tabs} Tab presses and Enter");
    kp1.client
        .goto(&format!("{police}/alerts/{}", r.event_id))
        .await
        .unwrap();
    main_until(&kp1, "the details", |t| t.contains("This access is logged")).await;
    audit_page(&kp1, "police /alerts/{id}", &mut found).await;
    kp1.client.goto(&format!("{police}/?lang=da")).await.unwrap();
    main_until(&kp1, "the start page", |t| t.contains("Sagsadvarsler")).await;
    audit_page(&kp1, "police / (da)", &mut found).await;
    kp1.close().await;

    // the guardian's pages
    let guardian = Browser::start(
        d.pki_dir(),
        Some(&Principal::Agency(AgencyId::parse("ngo-redbarnet").unwrap())),
    )
    .await
    .unwrap();
    for (path, expect) in [
        ("/cases?lang=en".to_owned(), "Your cases as guardian"),
        (format!("/cases/{case}"), "What happened to the child's data"),
        (format!("/cases/{case}/report"), "Every entry, oldest first"),
        (
            format!("/cases/{case}?lang=da"),
            "Hvad skete der med barnets oplysninger",
        ),
    ] {
        guardian.client.goto(&format!("{ngo}{path}")).await.unwrap();
        main_until(&guardian, &path, |t| t.contains(expect)).await;
        audit_page(&guardian, &format!("ngo {path}"), &mut found).await;
    }
    guardian.close().await;

    // the administrators' pages
    let admin2 = Browser::start(d.pki_dir(), Some(&admin("admin-2"))).await.unwrap();
    for (path, expect) in [
        ("/?lang=en".to_owned(), "Routing now"),
        ("/rules".to_owned(), "Every proposed rule set"),
        (
            format!("/rules/{}", proposed.proposal_id),
            "What changes against the live set",
        ),
        ("/rules/new".to_owned(), "Propose a rule set"),
        ("/directory".to_owned(), "Proposed changes of agencies"),
        ("/erasures".to_owned(), "Proposed erasures of cases"),
        ("/alerts".to_owned(), "Administrator alerts"),
        ("/audit".to_owned(), "Completeness"),
        (
            "/stats?by=district&then=sender_sector".to_owned(),
            "district × sender_sector",
        ),
        ("/rules?lang=da".to_owned(), "Alle foreslåede regelsæt"),
    ] {
        admin2.client.goto(&format!("{admin_base}{path}")).await.unwrap();
        main_until(&admin2, &path, |t| t.contains(expect)).await;
        audit_page(&admin2, &format!("admin {path}"), &mut found).await;
    }
    // on a tablet (768 px wide): nothing wider than the screen
    admin2.client.set_window_size(768, 1024).await.unwrap();
    for path in [
        format!("/rules/{}?lang=en", proposed.proposal_id),
        "/stats?by=district&then=sender_sector".to_owned(),
        "/audit".to_owned(),
    ] {
        admin2.client.goto(&format!("{admin_base}{path}")).await.unwrap();
        main_until(&admin2, &path, |t| !t.is_empty()).await;
        let fits = admin2
            .client
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(fits, serde_json::json!(true), "{path} fits a tablet's width");
    }
    admin2.screenshot("console-admin-tablet").await.unwrap();
    admin2.close().await;

    // the refusal page
    let nobody = Browser::start(d.pki_dir(), None).await.unwrap();
    nobody.client.goto(&format!("{admin_base}/?lang=en")).await.unwrap();
    main_until(&nobody, "the refusal", |t| {
        t.contains("Present your employee certificate")
    })
    .await;
    audit_page(&nobody, "refusal", &mut found).await;
    nobody.close().await;

    assert!(found.is_empty(), "accessibility violations:\n{}", found.join("\n"));
}
