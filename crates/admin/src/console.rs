//! The administrators' web console, served by the admin service on its own HTTPS port with
//! the same TLS material as its gRPC port. The browser presents the administrator's
//! certificate; every page calls the admin service's own handlers as that administrator, so
//! the console adds no privilege, no second authorization path and no second audit: four
//! eyes, break-glass and its review hold exactly as over gRPC.
//!
//! Pages: rule-set versions; a proposal with its text, its diff against the live set (in
//! terms of effect) and its what-if replay of recent traffic, with approve, reject,
//! break-glass, review and rollback; proposing a rule set; directory changes and case
//! erasures waiting for a second administrator; administrator alerts and dead letters; the
//! audit's verification; the mapping-study statistics. Frame, headers, sign-in and form
//! tokens are [`henvis_runtime::console`]'s.

use std::sync::Arc;

use askama::Template;
use axum::{
    Extension, Form, Router,
    extract::{Path, Query, State},
    http::HeaderMap,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use henvis_domain::Principal;
use henvis_proto::henvis::admin::v1::{
    AdminAlertsRequest, ApproveCaseErasureRequest, ApproveDirectoryChangeRequest, ApproveRuleSetRequest,
    BreakGlassRequest, DiffRuleSetsRequest, GetRuleSetRequest, ListCaseErasuresRequest, ListDirectoryChangesRequest,
    ListRuleSetsRequest, ProposeRollbackRequest, ProposeRuleSetRequest, RejectCaseErasureRequest,
    RejectDirectoryChangeRequest, RejectRuleSetRequest, ReviewBreakGlassRequest, RuleSetRef, RuleSetState,
    RuleSetVersion, StatsCell, StatsRequest, VerifyAuditRequest, WhatIfDelivery, WhatIfRequest, WhoAmIRequest,
    admin_service_server::AdminService as _, rule_set_ref, stats_cell,
};
use henvis_runtime::{
    console::{self, FormKey, Frame, Lang, LangQuery, NavItem, as_principal, rfc3339},
    https::Authenticated,
};

use crate::{Admin, service::AdminApi};

/// The console's state: the admin service and the key its form tokens are made with.
#[derive(Clone)]
struct Console {
    admin: Arc<Admin>,
    forms: FormKey,
}

impl Console {
    fn api(&self) -> AdminApi {
        AdminApi(self.admin.clone())
    }
}

/// The console's routes.
pub(crate) fn router(admin: Arc<Admin>) -> anyhow::Result<Router> {
    let app = Router::new()
        .route("/", get(home))
        .route("/rules", get(rule_sets).post(propose))
        .route("/rules/new", get(new_rule_set))
        .route("/rules/{id}", get(rule_set))
        .route("/directory", get(directory))
        .route("/erasures", get(erasures))
        .route("/{kind}/{id}/{action}", post(decide))
        .route("/alerts", get(alerts))
        .route("/audit", get(audit))
        .route("/stats", get(stats))
        .with_state(Console {
            admin,
            forms: FormKey::generate()?,
        });
    Ok(console::finish(app))
}

/// The console's text in one language.
struct Texts {
    lang: Lang,
    administrator: &'static str,
    home: &'static str,
    pending: &'static str,
    unreviewed: &'static str,
    rule_sets: &'static str,
    rule_sets_caption: &'static str,
    live_now: &'static str,
    proposal: &'static str,
    version: &'static str,
    state: &'static str,
    proposed: &'static str,
    proposed_by: &'static str,
    note: &'static str,
    approved: &'static str,
    rejected: &'static str,
    tests: &'static str,
    break_glass: &'static str,
    reviewed: &'static str,
    not_reviewed: &'static str,
    new_rule_set: &'static str,
    file: &'static str,
    text: &'static str,
    propose: &'static str,
    propose_intro: &'static str,
    diff: &'static str,
    diff_caption: &'static str,
    no_changes: &'static str,
    message_type: &'static str,
    recipient: &'static str,
    route: &'static str,
    change: &'static str,
    classes: &'static str,
    before: &'static str,
    after: &'static str,
    what_if: &'static str,
    what_if_intro: &'static str,
    replayed: &'static str,
    skipped: &'static str,
    gained: &'static str,
    lost: &'static str,
    classes_gained: &'static str,
    classes_lost: &'static str,
    deliveries_caption: &'static str,
    event: &'static str,
    case: &'static str,
    not_available: &'static str,
    approve: &'static str,
    reject: &'static str,
    reason: &'static str,
    break_glass_intro: &'static str,
    review: &'static str,
    review_note: &'static str,
    rollback: &'static str,
    four_eyes: &'static str,
    rule_text: &'static str,
    directory: &'static str,
    directory_caption: &'static str,
    changes: &'static str,
    erasures: &'static str,
    erasures_caption: &'static str,
    alerts: &'static str,
    alerts_caption: &'static str,
    dead_letters: &'static str,
    dead_letters_caption: &'static str,
    kind: &'static str,
    details: &'static str,
    none: &'static str,
    audit: &'static str,
    audit_intro: &'static str,
    intact: &'static str,
    broken: &'static str,
    records: &'static str,
    links: &'static str,
    checkpoints: &'static str,
    completeness: &'static str,
    events_decided: &'static str,
    deliveries: &'static str,
    without_outcome: &'static str,
    without_decision: &'static str,
    decided_twice: &'static str,
    alert_steps: &'static str,
    alert_steps_unrecorded: &'static str,
    governance_steps: &'static str,
    governance_steps_unrecorded: &'static str,
    latest_checkpoint: &'static str,
    stats: &'static str,
    stats_intro: &'static str,
    by: &'static str,
    then_by: &'static str,
    show: &'static str,
    total: &'static str,
    suppressed: &'static str,
    unit: &'static str,
    threshold: &'static str,
}

const EN: Texts = Texts {
    lang: Lang::En,
    administrator: "administrator",
    home: "Administration",
    pending: "proposals waiting for a second administrator",
    unreviewed: "break-glass approvals waiting for review",
    rule_sets: "Rule sets",
    rule_sets_caption: "Every proposed rule set, newest first",
    live_now: "Routing now",
    proposal: "Proposal",
    version: "Version",
    state: "State",
    proposed: "Proposed",
    proposed_by: "Proposed by",
    note: "Note",
    approved: "Approved",
    rejected: "Rejected",
    tests: "Own tests passed",
    break_glass: "Break-glass",
    reviewed: "reviewed",
    not_reviewed: "not reviewed yet",
    new_rule_set: "Propose a rule set",
    file: "File name",
    text: "Rule file (TOML)",
    propose: "Propose",
    propose_intro: "The rule set is validated against the schema and the directory and its own tests run; it goes live only when a second administrator approves it.",
    diff: "What changes against the live set",
    diff_caption: "Differences in effect, per message type, recipient and route",
    no_changes: "No difference in effect.",
    message_type: "Message type",
    recipient: "Recipient",
    route: "Route",
    change: "Change",
    classes: "Classes",
    before: "Before",
    after: "After",
    what_if: "What-if: the last 7 days replayed",
    what_if_intro: "Every recorded decision decided again under the live set and under this one.",
    replayed: "Decisions replayed",
    skipped: "Not replayable",
    gained: "Deliveries gained",
    lost: "Deliveries lost",
    classes_gained: "Classes gained",
    classes_lost: "Classes lost",
    deliveries_caption: "Deliveries that would change (first 20 of each kind)",
    event: "Event",
    case: "Case",
    not_available: "Not available",
    approve: "Approve",
    reject: "Reject",
    reason: "Reason",
    break_glass_intro: "Put it live alone, now: an administrator alert is raised and another administrator must review it.",
    review: "Review",
    review_note: "What you found",
    rollback: "Propose a rollback to this set",
    four_eyes: "You proposed this set: another administrator approves or rejects it.",
    rule_text: "The rule file",
    directory: "Directory changes",
    directory_caption: "Proposed changes of agencies, contact persons and administrators, newest first",
    changes: "Changes",
    erasures: "Case erasures",
    erasures_caption: "Proposed erasures of cases, newest first",
    alerts: "Alerts and dead letters",
    alerts_caption: "Administrator alerts, oldest first",
    dead_letters: "Dead letters",
    dead_letters_caption: "Deliveries henvis could not make (subjects: ids only)",
    kind: "Kind",
    details: "Details",
    none: "None.",
    audit: "Audit verification",
    audit_intro: "The audit's hash chain and signed checkpoints checked from the first record to the last, and whether it accounts for every delivery.",
    intact: "Intact",
    broken: "Broken",
    records: "Records",
    links: "Chained",
    checkpoints: "Signed checkpoints verified",
    completeness: "Completeness",
    events_decided: "Events decided",
    deliveries: "Deliveries stored",
    without_outcome: "Recipients without a stored delivery",
    without_decision: "Deliveries without a decision",
    decided_twice: "Events decided more than once",
    alert_steps: "Steps on alerts",
    alert_steps_unrecorded: "Steps on alerts without their audit record",
    governance_steps: "Administrators' steps",
    governance_steps_unrecorded: "Administrators' steps without their audit record",
    latest_checkpoint: "Newest checkpoint (keep a copy off the system)",
    stats: "Statistics",
    stats_intro: "Counts for the mapping study; small counts are suppressed.",
    by: "By",
    then_by: "Then by",
    show: "Show",
    total: "Total",
    suppressed: "suppressed",
    unit: "Counted",
    threshold: "Suppressed under",
};

const DA: Texts = Texts {
    lang: Lang::Da,
    administrator: "administrator",
    home: "Administration",
    pending: "forslag, der venter på en anden administrator",
    unreviewed: "nødgodkendelser, der venter på gennemgang",
    rule_sets: "Regelsæt",
    rule_sets_caption: "Alle foreslåede regelsæt, nyeste først",
    live_now: "Router nu",
    proposal: "Forslag",
    version: "Version",
    state: "Status",
    proposed: "Foreslået",
    proposed_by: "Foreslået af",
    note: "Note",
    approved: "Godkendt",
    rejected: "Afvist",
    tests: "Egne test bestået",
    break_glass: "Nødgodkendelse",
    reviewed: "gennemgået",
    not_reviewed: "endnu ikke gennemgået",
    new_rule_set: "Foreslå et regelsæt",
    file: "Filnavn",
    text: "Regelfil (TOML)",
    propose: "Foreslå",
    propose_intro: "Regelsættet valideres mod skemaet og myndighedsregistret, og dets egne test køres; det træder først i kraft, når en anden administrator godkender det.",
    diff: "Hvad ændres i forhold til det gældende sæt",
    diff_caption: "Forskelle i virkning pr. meddelelsestype, modtager og rute",
    no_changes: "Ingen forskel i virkning.",
    message_type: "Meddelelsestype",
    recipient: "Modtager",
    route: "Rute",
    change: "Ændring",
    classes: "Klasser",
    before: "Før",
    after: "Efter",
    what_if: "Hvad nu hvis: de seneste 7 dage afspillet igen",
    what_if_intro: "Hver registreret afgørelse afgjort igen efter det gældende sæt og efter dette.",
    replayed: "Afgørelser afspillet",
    skipped: "Kunne ikke afspilles",
    gained: "Nye leveringer",
    lost: "Mistede leveringer",
    classes_gained: "Klasser tilføjet",
    classes_lost: "Klasser fjernet",
    deliveries_caption: "Leveringer, der ville ændre sig (de første 20 af hver slags)",
    event: "Hændelse",
    case: "Sag",
    not_available: "Ikke tilgængelig",
    approve: "Godkend",
    reject: "Afvis",
    reason: "Begrundelse",
    break_glass_intro: "Sæt det i kraft alene, nu: en administratoradvarsel rejses, og en anden administrator skal gennemgå det.",
    review: "Gennemgå",
    review_note: "Hvad du fandt",
    rollback: "Foreslå at vende tilbage til dette sæt",
    four_eyes: "Du har foreslået dette sæt: en anden administrator godkender eller afviser det.",
    rule_text: "Regelfilen",
    directory: "Registerændringer",
    directory_caption: "Foreslåede ændringer af myndigheder, kontaktpersoner og administratorer, nyeste først",
    changes: "Ændringer",
    erasures: "Sletning af sager",
    erasures_caption: "Foreslåede sletninger af sager, nyeste først",
    alerts: "Advarsler og døde breve",
    alerts_caption: "Administratoradvarsler, ældste først",
    dead_letters: "Døde breve",
    dead_letters_caption: "Leveringer, henvis ikke kunne foretage (emner: kun id'er)",
    kind: "Art",
    details: "Detaljer",
    none: "Ingen.",
    audit: "Kontrol af revisionssporet",
    audit_intro: "Revisionssporets hashkæde og signerede kontrolpunkter kontrolleret fra første til sidste post, og om det redegør for hver levering.",
    intact: "Intakt",
    broken: "Brudt",
    records: "Poster",
    links: "Kædet",
    checkpoints: "Signerede kontrolpunkter verificeret",
    completeness: "Fuldstændighed",
    events_decided: "Afgjorte hændelser",
    deliveries: "Lagrede leveringer",
    without_outcome: "Modtagere uden lagret levering",
    without_decision: "Leveringer uden afgørelse",
    decided_twice: "Hændelser afgjort mere end én gang",
    alert_steps: "Skridt på advarsler",
    alert_steps_unrecorded: "Skridt på advarsler uden deres revisionspost",
    governance_steps: "Administratorers skridt",
    governance_steps_unrecorded: "Administratorers skridt uden deres revisionspost",
    latest_checkpoint: "Nyeste kontrolpunkt (gem en kopi uden for systemet)",
    stats: "Statistik",
    stats_intro: "Optællinger til kortlægningen; små tal undertrykkes.",
    by: "Efter",
    then_by: "Derefter efter",
    show: "Vis",
    total: "I alt",
    suppressed: "undertrykt",
    unit: "Talt",
    threshold: "Undertrykt under",
};

fn texts(headers: &HeaderMap, query: &LangQuery) -> &'static Texts {
    console::lang(headers, query).pick(&DA, &EN)
}

/// The signed-in administrator.
struct Person {
    principal: Principal,
    who: String,
    t: &'static Texts,
    nav: [NavItem; 6],
}

impl Person {
    fn frame<'a>(&'a self, title: &'a str) -> Frame<'a> {
        Frame {
            chrome: self.t.lang.chrome(),
            title,
            who: &self.who,
            role: self.t.administrator,
            nav: &self.nav,
        }
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        as_principal(&self.principal, msg)
    }

    /// The page saying why the service refused.
    fn refused(&self, status: &tonic::Status) -> Response {
        console::refused(self.frame(self.t.lang.chrome().not_allowed), status)
    }

    fn page(&self, html: Result<String, askama::Error>, query: &LangQuery) -> Response {
        console::page(html, query, self.t.lang)
    }
}

/// The administrator a request's certificate proves, if the directory lists them.
fn signed_in(c: &Console, auth: &Authenticated, t: &'static Texts) -> Result<Person, Box<Response>> {
    let principal = console::sign_in(auth, t.lang, |p| {
        c.admin.admitted(p).map(drop).map_err(|s| s.message().to_owned())
    })?;
    Ok(Person {
        who: match &principal {
            Principal::Admin(id) => id.to_string(),
            other => other.path(),
        },
        principal,
        t,
        nav: [
            ("/rules", t.rule_sets),
            ("/directory", t.directory),
            ("/erasures", t.erasures),
            ("/alerts", t.alerts),
            ("/audit", t.audit),
            ("/stats", t.stats),
        ],
    })
}

/// The administrator posting a form; refused without their form token.
fn poster(c: &Console, auth: &Authenticated, headers: &HeaderMap, token: &str) -> Result<Person, Box<Response>> {
    let person = signed_in(c, auth, texts(headers, &LangQuery::default()))?;
    if let Err(s) = c.forms.check(&person.principal, token, person.t.lang) {
        return Err(Box::new(person.refused(&s)));
    }
    Ok(person)
}

/// Signs in, or returns the refusal page.
macro_rules! person {
    ($c:expr, $auth:expr, $headers:expr, $q:expr) => {
        match signed_in(&$c, &$auth, texts(&$headers, &$q)) {
            Ok(p) => p,
            Err(r) => return *r,
        }
    };
}

#[derive(Template)]
#[template(path = "admin_home.html")]
struct HomePage<'a> {
    frame: Frame<'a>,
    t: &'a Texts,
    pending: u32,
    unreviewed: u32,
    live: String,
}

async fn home(
    State(c): State<Console>,
    Extension(auth): Extension<Authenticated>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let p = person!(c, auth, headers, q);
    let me = match c.api().who_am_i(p.request(WhoAmIRequest {})).await {
        Ok(r) => r.into_inner(),
        Err(s) => return p.refused(&s),
    };
    let live = match c.api().list_rule_sets(p.request(ListRuleSetsRequest {})).await {
        Ok(r) => r.into_inner().live_rule_set_version,
        Err(s) => return p.refused(&s),
    };
    p.page(
        HomePage {
            frame: p.frame(p.t.home),
            t: p.t,
            pending: me.pending_proposals,
            unreviewed: me.unreviewed_break_glass,
            live,
        }
        .render(),
        &q,
    )
}

fn state_text(t: &Texts, s: i32) -> (&'static str, &'static str) {
    let da = t.lang == Lang::Da;
    match RuleSetState::try_from(s).unwrap_or(RuleSetState::Unspecified) {
        RuleSetState::Proposed => (if da { "foreslået" } else { "proposed" }, "proposed"),
        RuleSetState::Live => (if da { "gældende" } else { "live" }, "live"),
        RuleSetState::Superseded => (if da { "afløst" } else { "superseded" }, "superseded"),
        RuleSetState::Rejected => (if da { "afvist" } else { "rejected" }, "rejected"),
        RuleSetState::Unspecified => ("", ""),
    }
}

/// A rule-set version as a row or a page heading shows it.
struct VersionRow {
    id: u64,
    version: String,
    state: &'static str,
    state_class: &'static str,
    proposed_by: String,
    proposed_at: String,
    note: String,
    approved: String,
    rejected: String,
    tests: u32,
    break_glass: String,
    awaits_review: bool,
    rollback_of: u64,
    file: String,
    sha256: String,
}

fn version_row(t: &Texts, v: &RuleSetVersion) -> VersionRow {
    let (state, state_class) = state_text(t, v.state);
    let by_at = |by: &str, at: Option<&prost_types::Timestamp>| {
        if by.is_empty() {
            String::new()
        } else {
            format!("{by}, {}", rfc3339(at))
        }
    };
    VersionRow {
        id: v.proposal_id,
        version: v.rule_set_version.clone(),
        state,
        state_class,
        proposed_by: v.proposed_by.clone(),
        proposed_at: rfc3339(v.proposed_at.as_ref()),
        note: v.note.clone(),
        approved: by_at(&v.approved_by, v.approved_at.as_ref()),
        rejected: match by_at(&v.rejected_by, v.rejected_at.as_ref()) {
            r if r.is_empty() => r,
            r => format!("{r}: {}", v.rejection_reason),
        },
        tests: v.tests_passed,
        break_glass: v.break_glass.as_ref().map_or_else(String::new, |g| {
            if g.reviewed {
                format!("{} — {} {} ({})", g.reason, t.reviewed, g.reviewed_by, g.review_note)
            } else {
                format!("{} — {}", g.reason, t.not_reviewed)
            }
        }),
        awaits_review: v.break_glass.as_ref().is_some_and(|g| !g.reviewed),
        rollback_of: v.rollback_of,
        file: v.file.clone(),
        sha256: v.sha256.clone(),
    }
}

#[derive(Template)]
#[template(path = "admin_rules.html")]
struct RulesPage<'a> {
    frame: Frame<'a>,
    t: &'a Texts,
    live: String,
    versions: Vec<VersionRow>,
}

async fn rule_sets(
    State(c): State<Console>,
    Extension(auth): Extension<Authenticated>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let p = person!(c, auth, headers, q);
    let list = match c.api().list_rule_sets(p.request(ListRuleSetsRequest {})).await {
        Ok(r) => r.into_inner(),
        Err(s) => return p.refused(&s),
    };
    p.page(
        RulesPage {
            frame: p.frame(p.t.rule_sets),
            t: p.t,
            live: list.live_rule_set_version,
            versions: list.versions.iter().map(|v| version_row(p.t, v)).collect(),
        }
        .render(),
        &q,
    )
}

#[derive(Template)]
#[template(path = "admin_propose.html")]
struct ProposePage<'a> {
    frame: Frame<'a>,
    t: &'a Texts,
    file: String,
    text: String,
    csrf: String,
}

/// The form to propose a rule set, holding the live set's file to start from.
async fn new_rule_set(
    State(c): State<Console>,
    Extension(auth): Extension<Authenticated>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let p = person!(c, auth, headers, q);
    let live = match c
        .api()
        .get_rule_set(p.request(GetRuleSetRequest { proposal_id: 0 }))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => return p.refused(&s),
    };
    p.page(
        ProposePage {
            frame: p.frame(p.t.new_rule_set),
            t: p.t,
            file: live.file,
            text: live.text,
            csrf: c.forms.token(&p.principal),
        }
        .render(),
        &q,
    )
}

#[derive(serde::Deserialize)]
struct ProposeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    file: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    note: String,
}

async fn propose(
    State(c): State<Console>,
    Extension(auth): Extension<Authenticated>,
    headers: HeaderMap,
    Form(form): Form<ProposeForm>,
) -> Response {
    let p = match poster(&c, &auth, &headers, &form.csrf) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let request = ProposeRuleSetRequest {
        file: form.file,
        // browsers send form text with CRLF line ends
        text: form.text.replace("\r\n", "\n"),
        note: form.note,
    };
    match c.api().propose_rule_set(p.request(request)).await {
        Ok(v) => Redirect::to(&format!("/rules/{}", v.into_inner().proposal_id)).into_response(),
        Err(s) => p.refused(&s),
    }
}

/// One difference in effect, as the diff table shows it.
struct ChangeRow {
    message_type: String,
    recipient: String,
    rule_id: String,
    change: String,
    classes: String,
    before: String,
    after: String,
    class: &'static str,
}

/// One delivery the what-if replay finds changed.
struct DeliveryRow {
    kind: &'static str,
    class: &'static str,
    event_id: String,
    case_id: String,
    message_type: String,
    recipient: String,
    rules: String,
    classes: String,
}

/// The what-if replay's figures.
struct WhatIfView {
    replayed: u32,
    skipped: u32,
    gained: u32,
    lost: u32,
    classes_gained: u32,
    classes_lost: u32,
    rows: Vec<DeliveryRow>,
}

#[derive(Template)]
#[template(path = "admin_rule_set.html")]
struct RuleSetPage<'a> {
    frame: Frame<'a>,
    t: &'a Texts,
    title: String,
    v: VersionRow,
    text: String,
    live_version: String,
    changes: Result<Vec<ChangeRow>, String>,
    what_if: Result<WhatIfView, String>,
    proposed: bool,
    mine: bool,
    superseded: bool,
    csrf: String,
}

/// A proposal: what it is, what it changes against the live set (the diff in effect and
/// the what-if replay of the last 7 days) and the decisions that may be taken on it.
async fn rule_set(
    State(c): State<Console>,
    Extension(auth): Extension<Authenticated>,
    Path(id): Path<u64>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let p = person!(c, auth, headers, q);
    let t = p.t;
    let version = match c
        .api()
        .get_rule_set(p.request(GetRuleSetRequest { proposal_id: id }))
        .await
    {
        Ok(v) => v.into_inner(),
        Err(s) => return p.refused(&s),
    };
    let live = || RuleSetRef {
        r#ref: Some(rule_set_ref::Ref::Live(true)),
    };
    let this = || RuleSetRef {
        r#ref: Some(rule_set_ref::Ref::ProposalId(id)),
    };
    let diff = c
        .api()
        .diff_rule_sets(p.request(DiffRuleSetsRequest {
            from: Some(live()),
            to: Some(this()),
        }))
        .await;
    let mut live_version = String::new();
    let changes = diff.map(tonic::Response::into_inner).map_or_else(
        |s| Err(s.message().to_owned()),
        |d| {
            live_version = d.from_version;
            Ok(d.changes
                .into_iter()
                .map(|ch| ChangeRow {
                    class: if ch.change.contains("added") || ch.change.contains("gained") {
                        "gained"
                    } else if ch.change.contains("removed") || ch.change.contains("lost") {
                        "lost"
                    } else {
                        ""
                    },
                    message_type: ch.message_type,
                    recipient: ch.recipient,
                    rule_id: ch.rule_id,
                    change: ch.change,
                    classes: ch.classes.join(", "),
                    before: ch.before,
                    after: ch.after,
                })
                .collect())
        },
    );
    let what_if = c
        .api()
        .what_if(p.request(WhatIfRequest {
            candidate: Some(this()),
            days: 7,
            max_items: 20,
            offset: 0,
        }))
        .await
        .map(tonic::Response::into_inner)
        .map_or_else(
            |s| Err(s.message().to_owned()),
            |w| {
                let mut rows = Vec::new();
                let mut add = |kind, class, list: &[WhatIfDelivery]| {
                    rows.extend(list.iter().map(|d| DeliveryRow {
                        kind,
                        class,
                        event_id: d.event_id.clone(),
                        case_id: d.case_id.clone(),
                        message_type: d.message_type.clone(),
                        recipient: d.recipient_agency_id.clone(),
                        rules: d.rule_ids.join(", "),
                        classes: d.classes.join(", "),
                    }));
                };
                add(t.gained, "gained", &w.gained);
                add(t.lost, "lost", &w.lost);
                add(t.classes_gained, "gained", &w.classes_gained);
                add(t.classes_lost, "lost", &w.classes_lost);
                Ok(WhatIfView {
                    replayed: w.replayed,
                    skipped: w.skipped,
                    gained: w.gained_total,
                    lost: w.lost_total,
                    classes_gained: w.classes_gained_total,
                    classes_lost: w.classes_lost_total,
                    rows,
                })
            },
        );
    let v = version_row(t, &version);
    let proposed = version.state == RuleSetState::Proposed as i32;
    let mine = version.proposed_by == p.who;
    p.page(
        RuleSetPage {
            frame: p.frame(t.proposal),
            t,
            title: format!("{} {id}", t.proposal),
            v,
            text: version.text,
            live_version,
            changes,
            what_if,
            proposed,
            mine,
            superseded: version.state == RuleSetState::Superseded as i32,
            csrf: c.forms.token(&p.principal),
        }
        .render(),
        &q,
    )
}

#[derive(serde::Deserialize)]
struct DecisionForm {
    #[serde(default)]
    csrf: String,
    /// The reason (reject, break-glass) or the note (review, rollback).
    #[serde(default)]
    reason: String,
}

/// A decision on something governed, as the administrator: `rules/{id}/approve|reject|
/// break-glass|review|rollback`, `directory/{id}/approve|reject`, `erasures/{id}/approve|
/// reject`. The service's own handlers decide whether it may be taken (four eyes and all).
async fn decide(
    State(c): State<Console>,
    Extension(auth): Extension<Authenticated>,
    Path((kind, id, action)): Path<(String, u64, String)>,
    headers: HeaderMap,
    Form(form): Form<DecisionForm>,
) -> Response {
    let p = match poster(&c, &auth, &headers, &form.csrf) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let api = c.api();
    let reason = form.reason;
    let rules = |r: Result<tonic::Response<RuleSetVersion>, tonic::Status>| {
        r.map(|v| format!("/rules/{}", v.into_inner().proposal_id))
    };
    let done = match (kind.as_str(), action.as_str()) {
        ("rules", "approve") => rules(
            api.approve_rule_set(p.request(ApproveRuleSetRequest { proposal_id: id }))
                .await,
        ),
        ("rules", "reject") => rules(
            api.reject_rule_set(p.request(RejectRuleSetRequest {
                proposal_id: id,
                reason,
            }))
            .await,
        ),
        ("rules", "break-glass") => rules(
            api.break_glass(p.request(BreakGlassRequest {
                proposal_id: id,
                reason,
            }))
            .await,
        ),
        ("rules", "review") => rules(
            api.review_break_glass(p.request(ReviewBreakGlassRequest {
                proposal_id: id,
                note: reason,
            }))
            .await,
        ),
        ("rules", "rollback") => rules(
            api.propose_rollback(p.request(ProposeRollbackRequest {
                proposal_id: id,
                note: reason,
            }))
            .await,
        ),
        ("directory", "approve") => api
            .approve_directory_change(p.request(ApproveDirectoryChangeRequest { proposal_id: id }))
            .await
            .map(|_| "/directory".to_owned()),
        ("directory", "reject") => api
            .reject_directory_change(p.request(RejectDirectoryChangeRequest {
                proposal_id: id,
                reason,
            }))
            .await
            .map(|_| "/directory".to_owned()),
        ("erasures", "approve") => api
            .approve_case_erasure(p.request(ApproveCaseErasureRequest { erasure_id: id }))
            .await
            .map(|_| "/erasures".to_owned()),
        ("erasures", "reject") => api
            .reject_case_erasure(p.request(RejectCaseErasureRequest { erasure_id: id, reason }))
            .await
            .map(|_| "/erasures".to_owned()),
        _ => Err(tonic::Status::not_found("no such decision")),
    };
    match done {
        Ok(to) => Redirect::to(&to).into_response(),
        Err(s) => p.refused(&s),
    }
}

/// A directory change or a case erasure waiting for, or past, its second administrator.
struct GovernedRow {
    id: u64,
    what: Vec<String>,
    state: &'static str,
    state_class: &'static str,
    proposed: String,
    note: String,
    decided: String,
    awaits: bool,
    mine: bool,
}

#[derive(Template)]
#[template(path = "admin_governed.html")]
struct GovernedPage<'a> {
    frame: Frame<'a>,
    t: &'a Texts,
    caption: &'a str,
    base: &'a str,
    rows: Vec<GovernedRow>,
    csrf: String,
}

fn decided(
    t: &Texts,
    approved_by: &str,
    approved_at: Option<&prost_types::Timestamp>,
    rejected_by: &str,
    rejected_at: Option<&prost_types::Timestamp>,
    reason: &str,
) -> String {
    if !approved_by.is_empty() {
        format!("{} {approved_by}, {}", t.approved, rfc3339(approved_at))
    } else if !rejected_by.is_empty() {
        format!("{} {rejected_by}, {}: {reason}", t.rejected, rfc3339(rejected_at))
    } else {
        String::new()
    }
}

async fn directory(
    State(c): State<Console>,
    Extension(auth): Extension<Authenticated>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let p = person!(c, auth, headers, q);
    let t = p.t;
    let list = match c
        .api()
        .list_directory_changes(p.request(ListDirectoryChangesRequest {}))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => return p.refused(&s),
    };
    let rows = list
        .proposals
        .into_iter()
        .map(|d| {
            let (state, state_class) = state_text(t, d.state);
            GovernedRow {
                id: d.proposal_id,
                state,
                state_class,
                proposed: format!("{}, {}", d.proposed_by, rfc3339(d.proposed_at.as_ref())),
                decided: decided(
                    t,
                    &d.approved_by,
                    d.approved_at.as_ref(),
                    &d.rejected_by,
                    d.rejected_at.as_ref(),
                    &d.rejection_reason,
                ),
                awaits: d.state == RuleSetState::Proposed as i32,
                mine: d.proposed_by == p.who,
                what: d.changes,
                note: d.note,
            }
        })
        .collect();
    p.page(
        GovernedPage {
            frame: p.frame(t.directory),
            t,
            caption: t.directory_caption,
            base: "/directory",
            rows,
            csrf: c.forms.token(&p.principal),
        }
        .render(),
        &q,
    )
}

async fn erasures(
    State(c): State<Console>,
    Extension(auth): Extension<Authenticated>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let p = person!(c, auth, headers, q);
    let t = p.t;
    let list = match c.api().list_case_erasures(p.request(ListCaseErasuresRequest {})).await {
        Ok(r) => r.into_inner(),
        Err(s) => return p.refused(&s),
    };
    let rows = list
        .erasures
        .into_iter()
        .map(|e| {
            let (state, state_class) = state_text(t, e.state);
            let mut what = vec![format!("{}: {}", t.case, e.case_id), e.statement.clone()];
            if !e.police_hold_override.is_empty() {
                what.push(e.police_hold_override.clone());
            }
            GovernedRow {
                id: e.erasure_id,
                state,
                state_class,
                proposed: format!("{}, {}", e.proposed_by, rfc3339(e.proposed_at.as_ref())),
                decided: decided(
                    t,
                    &e.approved_by,
                    e.approved_at.as_ref(),
                    &e.rejected_by,
                    e.rejected_at.as_ref(),
                    &e.rejection_reason,
                ),
                awaits: e.state == RuleSetState::Proposed as i32,
                mine: e.proposed_by == p.who,
                what,
                note: e.reason,
            }
        })
        .collect();
    p.page(
        GovernedPage {
            frame: p.frame(t.erasures),
            t,
            caption: t.erasures_caption,
            base: "/erasures",
            rows,
            csrf: c.forms.token(&p.principal),
        }
        .render(),
        &q,
    )
}

/// One administrator alert: its kind and its other fields.
struct AlertRow {
    kind: String,
    details: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "admin_alerts.html")]
struct AlertsPage<'a> {
    frame: Frame<'a>,
    t: &'a Texts,
    alerts: Vec<AlertRow>,
    dead_letters: Vec<String>,
}

async fn alerts(
    State(c): State<Console>,
    Extension(auth): Extension<Authenticated>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let p = person!(c, auth, headers, q);
    let r = match c.api().admin_alerts(p.request(AdminAlertsRequest {})).await {
        Ok(r) => r.into_inner(),
        Err(s) => return p.refused(&s),
    };
    let alerts = r
        .alerts
        .iter()
        .map(
            |a| match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(a) {
                Ok(mut m) => AlertRow {
                    kind: m
                        .remove("kind")
                        .and_then(|k| k.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    details: m
                        .into_iter()
                        .map(|(k, v)| {
                            let v = match v {
                                serde_json::Value::String(s) => s,
                                other => other.to_string(),
                            };
                            (k, v)
                        })
                        .collect(),
                },
                Err(_) => AlertRow {
                    kind: String::new(),
                    details: vec![(String::new(), a.clone())],
                },
            },
        )
        .collect();
    p.page(
        AlertsPage {
            frame: p.frame(p.t.alerts),
            t: p.t,
            alerts,
            dead_letters: r.dead_letters,
        }
        .render(),
        &q,
    )
}

#[derive(Template)]
#[template(path = "admin_audit.html")]
struct AuditPage<'a> {
    frame: Frame<'a>,
    t: &'a Texts,
    intact: bool,
    finding: String,
    records: u64,
    links: u64,
    checkpoints: u64,
    completeness: Vec<(&'static str, u64, bool)>,
    latest_checkpoint: String,
}

/// The audit verified now, with completeness.
async fn audit(
    State(c): State<Console>,
    Extension(auth): Extension<Authenticated>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let p = person!(c, auth, headers, q);
    let t = p.t;
    let v = match c
        .api()
        .verify_audit(p.request(VerifyAuditRequest {
            trusted_checkpoints: Vec::new(),
            completeness: true,
        }))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => return p.refused(&s),
    };
    let completeness = v.completeness.map_or_else(Vec::new, |c| {
        vec![
            (t.events_decided, c.events_decided, false),
            (t.deliveries, c.deliveries, false),
            (t.without_outcome, c.without_outcome, c.without_outcome > 0),
            (t.without_decision, c.without_decision, c.without_decision > 0),
            (t.decided_twice, c.decided_more_than_once, c.decided_more_than_once > 0),
            (t.alert_steps, c.alert_steps, false),
            (
                t.alert_steps_unrecorded,
                c.alert_steps_without_record,
                c.alert_steps_without_record > 0,
            ),
            (t.governance_steps, c.governance_steps, false),
            (
                t.governance_steps_unrecorded,
                c.governance_steps_without_record,
                c.governance_steps_without_record > 0,
            ),
        ]
    });
    p.page(
        AuditPage {
            frame: p.frame(t.audit),
            t,
            intact: v.intact,
            finding: v.finding,
            records: v.records,
            links: v.links,
            checkpoints: v.checkpoints,
            completeness,
            latest_checkpoint: v.latest_checkpoint,
        }
        .render(),
        &q,
    )
}

#[derive(serde::Deserialize, Default)]
struct StatsQuery {
    lang: Option<String>,
    by: Option<String>,
    then: Option<String>,
}

/// The dimensions the statistics can be broken down by.
const DIMENSIONS: [&str; 7] = [
    "month",
    "district",
    "region",
    "sender_sector",
    "age",
    "outcome",
    "message_type",
];

#[derive(Template)]
#[template(path = "admin_stats.html")]
struct StatsPage<'a> {
    frame: Frame<'a>,
    t: &'a Texts,
    dimensions: &'a [&'a str],
    by: String,
    then: String,
    unit: String,
    threshold: u64,
    columns: Vec<String>,
    rows: Vec<(String, Vec<String>, String)>,
    column_totals: Vec<String>,
    total: String,
}

async fn stats(
    State(c): State<Console>,
    Extension(auth): Extension<Authenticated>,
    Query(sq): Query<StatsQuery>,
    headers: HeaderMap,
) -> Response {
    let q = LangQuery { lang: sq.lang.clone() };
    let p = person!(c, auth, headers, q);
    let t = p.t;
    let by = sq.by.filter(|b| !b.is_empty()).unwrap_or_else(|| "month".to_owned());
    let then = sq.then.unwrap_or_default();
    let mut dims = vec![by.clone()];
    if !then.is_empty() && then != by {
        dims.push(then.clone());
    }
    let table = match c.api().stats(p.request(StatsRequest { by: dims, threshold: 0 })).await {
        Ok(r) => r.into_inner(),
        Err(s) => return p.refused(&s),
    };
    let cell = |c: Option<&StatsCell>| match c.and_then(|c| c.value.as_ref()) {
        Some(stats_cell::Value::Count(n)) => n.to_string(),
        Some(stats_cell::Value::Suppressed(_)) => format!("— ({})", t.suppressed),
        None => String::new(),
    };
    let rows = table
        .rows
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let cells = table
                .cells
                .get(i)
                .map(|r| r.cells.iter().map(|c| cell(Some(c))).collect())
                .unwrap_or_default();
            (name.clone(), cells, cell(table.row_totals.get(i)))
        })
        .collect();
    p.page(
        StatsPage {
            frame: p.frame(t.stats),
            t,
            dimensions: &DIMENSIONS,
            by,
            then,
            unit: table.unit,
            threshold: table.threshold,
            columns: table.columns.clone(),
            rows,
            column_totals: table.column_totals.iter().map(|c| cell(Some(c))).collect(),
            total: cell(table.total.as_ref()),
        }
        .render(),
        &q,
    )
}
