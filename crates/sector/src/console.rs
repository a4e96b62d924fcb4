//! The web console of a sector service, for the people who use henvis rather than their
//! agencies' systems. Served over HTTPS on its own port with the same TLS material as the
//! gRPC port; the browser presents the person's certificate, and every page calls the very
//! same service handlers the gRPC API calls, as that person: the console holds no
//! privilege of its own.
//!
//! Police contact persons: their district's alerts, live (server-sent events from the
//! alert feed), urgent ones first with their deadline counting down; claim; open the
//! details (a read receipt in the audit, and the page says so).
//!
//! Every response is `Cache-Control: no-store` with a strict Content-Security-Policy (no
//! inline script or style, nothing from elsewhere, no framing); no child data in a URL or a
//! title (URLs carry alert ids only); every form carries a token bound to the signed-in
//! person (a forged cross-site post is refused: the browser would present the person's
//! certificate to any site's request).

use std::{convert::Infallible, sync::Arc};

use askama::Template;
use axum::{
    Extension, Form, Router,
    extract::{Path, Query, State},
    http::HeaderMap,
    response::{
        IntoResponse, Redirect, Response,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
    routing::{get, post},
};
use futures::{Stream, StreamExt as _};
use henvis_domain::Principal;
use henvis_proto::henvis::police::v1::{
    Alert, AlertState as PbState, AlertsRequest, ClaimAlertRequest, FetchAlertDetailsRequest, ListAlertsRequest,
    alert_service_server::AlertService as _, alert_update,
};
use henvis_runtime::{
    console::{self, FormKey, Frame, Lang, LangQuery, NavItem, rfc3339},
    https::Authenticated,
};

use crate::{Core, alerts::Alerts};

/// The console's state: the service core and the key its form tokens are made with.
#[derive(Clone)]
struct Console {
    core: Arc<Core>,
    forms: FormKey,
}

/// The console's routes for the service `core` runs.
pub(crate) fn router(core: Arc<Core>) -> anyhow::Result<Router> {
    let app = Router::new()
        .route("/", get(home))
        .route("/alerts", get(alerts_page))
        .route("/alerts/rows", get(alert_rows))
        .route("/alerts/live", get(alerts_live))
        .route("/alerts/{id}", get(alert_page))
        .route("/alerts/{id}/claim", post(claim))
        .route("/alerts/{id}/hand-over", post(hand_over))
        .route("/alerts/{id}/close", post(close))
        .route("/cases", get(open_case))
        .route("/cases/{case_id}", get(case_page))
        .route("/cases/{case_id}/consents", post(record_consent))
        .route("/cases/{case_id}/consents/withdraw", post(withdraw_consent))
        .route("/cases/{case_id}/never-disclose", post(replace_never_disclose))
        .route("/cases/{case_id}/report", get(report_page))
        .with_state(Console {
            core,
            forms: FormKey::generate()?,
        });
    Ok(console::finish(app))
}

/// The console's text in one language.
#[derive(Debug)]
struct Texts {
    lang: Lang,
    home: &'static str,
    alerts: &'static str,
    alerts_intro: &'static str,
    nothing_here: &'static str,
    alerts_caption: &'static str,
    connecting: &'static str,
    live: &'static str,
    urgency: &'static str,
    urgent: &'static str,
    normal: &'static str,
    kind: &'static str,
    raised: &'static str,
    state: &'static str,
    deadline: &'static str,
    actions: &'static str,
    open_details: &'static str,
    claim: &'static str,
    no_alerts: &'static str,
    escalated_from: &'static str,
    alert: &'static str,
    access_logged: &'static str,
    case: &'static str,
    granted: &'static str,
    event: &'static str,
    back: &'static str,
    open: &'static str,
    claimed: &'static str,
    escalated: &'static str,
    closed: &'static str,
    contact_person: &'static str,
    hand_over: &'static str,
    to_person: &'static str,
    close_alert: &'static str,
    outcome: &'static str,
    outcome_child_safe: &'static str,
    outcome_investigation_opened: &'static str,
    outcome_referred: &'static str,
    outcome_no_action: &'static str,
    outcome_duplicate: &'static str,
    cases: &'static str,
    cases_intro: &'static str,
    open_case: &'static str,
    timeline: &'static str,
    timeline_caption: &'static str,
    decided: &'static str,
    sender: &'static str,
    received_by: &'static str,
    withheld: &'static str,
    consents: &'static str,
    consent: &'static str,
    reason: &'static str,
    withdraw: &'static str,
    record_consent: &'static str,
    consent_id: &'static str,
    recipients: &'static str,
    valid_days: &'static str,
    record: &'static str,
    cases_caption: &'static str,
    municipality: &'static str,
    consents_in_force: &'static str,
    closed_case: &'static str,
    open_state: &'static str,
    no_cases: &'static str,
    open_by_id: &'static str,
    covers: &'static str,
    valid: &'static str,
    never_disclose: &'static str,
    never_disclose_intro: &'static str,
    save: &'static str,
    report: &'static str,
    report_intro: &'static str,
    report_caption: &'static str,
    at: &'static str,
    report_event: &'static str,
    what: &'static str,
    details: &'static str,
    deferred: &'static str,
    open_report: &'static str,
}

const EN: Texts = Texts {
    lang: Lang::En,
    home: "Your henvis",
    alerts: "Case alerts",
    alerts_intro: "your district's alerts as they arrive; claim one to take it.",
    nothing_here: "There is nothing for you on this service yet. Agency systems use the gRPC API.",
    alerts_caption: "Alerts not closed, urgent first",
    connecting: "Connecting to the live feed…",
    live: "Live: new alerts appear by themselves.",
    urgency: "Urgency",
    urgent: "Urgent",
    normal: "Normal",
    kind: "Kind",
    raised: "Raised",
    state: "State",
    deadline: "Escalates in",
    actions: "Actions",
    open_details: "Open details",
    claim: "Claim",
    no_alerts: "No alerts.",
    escalated_from: "escalated from",
    alert: "Alert",
    access_logged: "This access is logged: your reading of these details is recorded in the audit.",
    case: "Case",
    granted: "Classes you may see",
    event: "The event, as your district may see it",
    back: "Back to the alerts",
    open: "open",
    claimed: "claimed",
    escalated: "escalated",
    closed: "closed",
    contact_person: "contact person",
    cases: "Your cases as guardian",
    cases_intro: "open a case by its id: who received what about the child, what was withheld and why; record and withdraw consent.",
    open_case: "Open",
    timeline: "What happened to the child's data",
    timeline_caption: "Every event of the case, oldest first, as henvis decided it",
    decided: "Decided",
    sender: "Sender",
    received_by: "Received by (classes; grounds)",
    withheld: "Withheld from (why)",
    consents: "Consents",
    consent: "Consent",
    reason: "Reason (optional)",
    withdraw: "Withdraw",
    record_consent: "Record a consent",
    consent_id: "Consent id",
    recipients: "Recipients (agency ids, comma-separated)",
    valid_days: "Valid for days",
    record: "Record",
    cases_caption: "The cases your agency is guardian of, the most recently changed first",
    municipality: "Municipality",
    consents_in_force: "Consents in force",
    closed_case: "closed",
    open_state: "open",
    no_cases: "Your agency is guardian of no case.",
    open_by_id: "Open a case by its id",
    covers: "Covers",
    valid: "Valid",
    never_disclose: "Never disclose",
    never_disclose_intro: "Kept from these agencies whatever the rules say: one line each, `agency-id` or `all except agency-id, agency-id`, then `:` and the classes kept (none: the whole event), e.g. `kommune-101: LOCATION`. Saving replaces the whole list.",
    save: "Save the list",
    report: "Subject access report",
    report_intro: "The account owed of what henvis did with the child's data in this case. Giving it is itself recorded in the audit.",
    report_caption: "Every entry, oldest first",
    at: "When",
    report_event: "Event (sender)",
    what: "What",
    details: "Details",
    deferred: "Deferred",
    open_report: "Subject access report",
    hand_over: "Hand over",
    to_person: "To contact person",
    close_alert: "Close",
    outcome: "Outcome",
    outcome_child_safe: "The child is safe",
    outcome_investigation_opened: "Investigation opened",
    outcome_referred: "Referred",
    outcome_no_action: "No action",
    outcome_duplicate: "Duplicate",
};

const DA: Texts = Texts {
    lang: Lang::Da,
    home: "Din henvis",
    alerts: "Sagsadvarsler",
    alerts_intro: "din kreds' advarsler, når de kommer; tag en for at overtage den.",
    nothing_here: "Der er endnu intet til dig på denne tjeneste. Myndighedernes systemer bruger gRPC-API'et.",
    alerts_caption: "Advarsler, der ikke er lukket, de hastende først",
    connecting: "Forbinder til det levende feed…",
    live: "Levende: nye advarsler dukker op af sig selv.",
    urgency: "Hast",
    urgent: "Haster",
    normal: "Normal",
    kind: "Art",
    raised: "Rejst",
    state: "Status",
    deadline: "Eskaleres om",
    actions: "Handlinger",
    open_details: "Åbn detaljer",
    claim: "Overtag",
    no_alerts: "Ingen advarsler.",
    escalated_from: "eskaleret fra",
    alert: "Advarsel",
    access_logged: "Denne adgang logges: at du læser disse oplysninger, registreres i revisionssporet.",
    case: "Sag",
    granted: "Klasser, du må se",
    event: "Hændelsen, som din kreds må se den",
    back: "Tilbage til advarslerne",
    open: "åben",
    claimed: "overtaget",
    escalated: "eskaleret",
    closed: "lukket",
    contact_person: "kontaktperson",
    cases: "Dine sager som værge",
    cases_intro: "åbn en sag med dens id: hvem fik hvad om barnet, hvad blev tilbageholdt og hvorfor; registrér og tilbagekald samtykke.",
    open_case: "Åbn",
    timeline: "Hvad skete der med barnets oplysninger",
    timeline_caption: "Sagens hændelser, ældste først, som henvis afgjorde dem",
    decided: "Afgjort",
    sender: "Afsender",
    received_by: "Modtaget af (klasser; grundlag)",
    withheld: "Tilbageholdt fra (hvorfor)",
    consents: "Samtykker",
    consent: "Samtykke",
    reason: "Begrundelse (valgfri)",
    withdraw: "Tilbagekald",
    record_consent: "Registrér et samtykke",
    consent_id: "Samtykke-id",
    recipients: "Modtagere (myndigheds-id'er, kommasepareret)",
    valid_days: "Gyldigt i dage",
    record: "Registrér",
    cases_caption: "De sager, din myndighed er værge for, senest ændrede først",
    municipality: "Kommune",
    consents_in_force: "Gældende samtykker",
    closed_case: "lukket",
    open_state: "åben",
    no_cases: "Din myndighed er ikke værge for nogen sag.",
    open_by_id: "Åbn en sag med dens id",
    covers: "Dækker",
    valid: "Gyldigt",
    never_disclose: "Må aldrig videregives",
    never_disclose_intro: "Holdes tilbage fra disse myndigheder, uanset reglerne: én linje hver, `myndigheds-id` eller `all except myndigheds-id, myndigheds-id`, derefter `:` og de klasser, der holdes tilbage (ingen: hele hændelsen), fx `kommune-101: LOCATION`. Gem erstatter hele listen.",
    save: "Gem listen",
    report: "Indsigtsrapport",
    report_intro: "Den redegørelse, der skyldes, for hvad henvis har gjort med barnets oplysninger i denne sag. At den gives, registreres selv i revisionssporet.",
    report_caption: "Alle poster, ældste først",
    at: "Hvornår",
    report_event: "Hændelse (afsender)",
    what: "Hvad",
    details: "Detaljer",
    deferred: "Udsat",
    open_report: "Indsigtsrapport",
    hand_over: "Overdrag",
    to_person: "Til kontaktperson",
    close_alert: "Luk",
    outcome: "Udfald",
    outcome_child_safe: "Barnet er i sikkerhed",
    outcome_investigation_opened: "Efterforskning indledt",
    outcome_referred: "Henvist",
    outcome_no_action: "Ingen handling",
    outcome_duplicate: "Dublet",
};

/// The page texts in the request's language.
fn texts(headers: &HeaderMap, query: &LangQuery) -> &'static Texts {
    console::lang(headers, query).pick(&DA, &EN)
}

fn page(html: Result<String, askama::Error>, query: &LangQuery, t: &Texts) -> Response {
    console::page(html, query, t.lang)
}

/// The signed-in person: their principal, how the frame names them, their menu.
struct Person {
    principal: Principal,
    who: String,
    role: String,
    lang: Lang,
    nav: Vec<NavItem>,
}

impl Person {
    fn frame<'a>(&'a self, title: &'a str) -> Frame<'a> {
        Frame {
            chrome: self.lang.chrome(),
            title,
            who: &self.who,
            role: &self.role,
            nav: &self.nav,
        }
    }
}

/// The person a request's certificate proves, if the directory admits them here.
fn signed_in(c: &Console, auth: &Authenticated, t: &'static Texts) -> Result<Person, Box<Response>> {
    let principal = console::sign_in(auth, t.lang, |p| crate::auth::admit(&c.core.directory.current(), p))?;
    let (who, role, nav) = match &principal {
        Principal::Person(p) => (
            p.to_string(),
            t.contact_person.to_owned(),
            if has_alerts(c) {
                vec![("/alerts", t.alerts)]
            } else {
                vec![]
            },
        ),
        Principal::Agency(a) => (a.to_string(), String::new(), vec![("/cases", t.cases)]),
        other => (other.path(), String::new(), vec![]),
    };
    Ok(Person {
        principal,
        who,
        role,
        lang: t.lang,
        nav,
    })
}

/// A gRPC request as `person`, for the service's own handlers.
fn as_person<T>(person: &Person, msg: T) -> tonic::Request<T> {
    console::as_principal(&person.principal, msg)
}

/// A refusal by the service's handler, shown as it would be told over gRPC.
fn refused(person: &Person, status: &tonic::Status) -> Response {
    console::refused(person.frame(person.lang.chrome().not_allowed), status)
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage<'a> {
    t: &'a Texts,
    frame: Frame<'a>,
    can_alerts: bool,
    can_cases: bool,
}

async fn home(
    State(c): State<Console>,
    Extension(auth): Extension<Authenticated>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let t = texts(&headers, &q);
    let person = match signed_in(&c, &auth, t) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let can_alerts = matches!(person.principal, Principal::Person(_)) && has_alerts(&c);
    let can_cases = matches!(person.principal, Principal::Agency(_));
    page(
        HomePage {
            t,
            frame: person.frame(t.home),
            can_alerts,
            can_cases,
        }
        .render(),
        &q,
        t,
    )
}

fn has_alerts(c: &Console) -> bool {
    c.core
        .profile
        .extras
        .iter()
        .any(|e| matches!(e, crate::profile::Extra::CaseAlerts))
}

/// One alert as a row.
struct Row {
    id: String,
    kind: String,
    urgency: String,
    urgent: bool,
    state: String,
    state_class: &'static str,
    claimed_by: String,
    escalated_from: String,
    raised_at: String,
    deadline: i64,
    deadline_text: String,
    claimable: bool,
}

fn state_text(t: &Texts, s: i32) -> (&'static str, &'static str) {
    match PbState::try_from(s).unwrap_or(PbState::Unspecified) {
        PbState::Open => (t.open, "open"),
        PbState::Claimed => (t.claimed, "claimed"),
        PbState::Escalated => (t.escalated, "escalated"),
        PbState::Closed => (t.closed, "closed"),
        PbState::Unspecified => ("", ""),
    }
}

fn row(t: &Texts, a: &Alert) -> Row {
    let (state, state_class) = state_text(t, a.state);
    let deadline = a.deadline.as_ref().map_or(0, |d| d.seconds);
    Row {
        id: a.alert_id.clone(),
        kind: a.kind.clone(),
        urgency: a.urgency.clone(),
        urgent: a.urgency == "urgent",
        state: state.to_owned(),
        state_class,
        claimed_by: a.claimed_by.clone(),
        escalated_from: a.escalated_from.clone(),
        raised_at: rfc3339(a.raised_at.as_ref()),
        deadline,
        deadline_text: rfc3339(a.deadline.as_ref()),
        claimable: a.state == PbState::Open as i32 || a.state == PbState::Escalated as i32,
    }
}

/// The district's alerts, urgent first, then the oldest first.
async fn rows(c: &Console, person: &Person, t: &Texts) -> Result<Vec<Row>, tonic::Status> {
    let list = Alerts(c.core.clone())
        .list_alerts(as_person(person, ListAlertsRequest {}))
        .await?
        .into_inner();
    let mut alerts = list.alerts;
    alerts.sort_by_key(|a| (a.urgency != "urgent", a.raised_at.as_ref().map_or(0, |t| t.seconds)));
    Ok(alerts.iter().map(|a| row(t, a)).collect())
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsPage<'a> {
    t: &'a Texts,
    frame: Frame<'a>,
    alerts: Vec<Row>,
    csrf: String,
}

#[derive(Template)]
#[template(path = "alert_rows.html")]
struct AlertRows<'a> {
    t: &'a Texts,
    alerts: Vec<Row>,
    csrf: String,
}

async fn alerts_page(
    State(c): State<Console>,
    Extension(auth): Extension<Authenticated>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let t = texts(&headers, &q);
    let person = match signed_in(&c, &auth, t) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    match rows(&c, &person, t).await {
        Ok(alerts) => page(
            AlertsPage {
                t,
                frame: person.frame(t.alerts),
                alerts,
                csrf: c.forms.token(&person.principal),
            }
            .render(),
            &q,
            t,
        ),
        Err(s) => refused(&person, &s),
    }
}

async fn alert_rows(
    State(c): State<Console>,
    Extension(auth): Extension<Authenticated>,
    headers: HeaderMap,
) -> Response {
    let q = LangQuery::default();
    let t = texts(&headers, &q);
    let person = match signed_in(&c, &auth, t) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    match rows(&c, &person, t).await {
        Ok(alerts) => page(
            AlertRows {
                t,
                alerts,
                csrf: c.forms.token(&person.principal),
            }
            .render(),
            &q,
            t,
        ),
        Err(s) => refused(&person, &s),
    }
}

/// The district's alert feed as server-sent events: `ready` once caught up, then `alert`
/// (data: the alert id only) on every change. The page fetches the rows again on each.
async fn alerts_live(
    State(c): State<Console>,
    Extension(auth): Extension<Authenticated>,
    headers: HeaderMap,
) -> Response {
    let t = texts(&headers, &LangQuery::default());
    let person = match signed_in(&c, &auth, t) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let feed = match Alerts(c.core.clone())
        .alerts(as_person(&person, AlertsRequest { resume_after: 0 }))
        .await
    {
        Ok(f) => f.into_inner(),
        Err(s) => return refused(&person, &s),
    };
    let events: std::pin::Pin<Box<dyn Stream<Item = Result<SseEvent, Infallible>> + Send>> = Box::pin(
        feed.take_while(|u| std::future::ready(u.is_ok()))
            .filter_map(|u| async move {
                match u.ok()?.kind? {
                    alert_update::Kind::Alert(a) => Some(Ok(SseEvent::default().event("alert").data(a.alert_id))),
                    alert_update::Kind::CaughtUp(_) => Some(Ok(SseEvent::default().event("ready").data("1"))),
                    alert_update::Kind::Heartbeat(_) => None,
                }
            }),
    );
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

#[derive(Template)]
#[template(path = "alert.html")]
struct AlertPage<'a> {
    t: &'a Texts,
    frame: Frame<'a>,
    id: String,
    kind: String,
    urgency: String,
    state: String,
    claimed_by: String,
    case_id: String,
    granted: String,
    fields: Vec<(String, String)>,
    claimable: bool,
    mine: bool,
    outcomes: Vec<(&'static str, &'static str)>,
    csrf: String,
}

/// The details behind an alert: fetched through the service's handler, which records the
/// read in the audit.
async fn alert_page(
    State(c): State<Console>,
    Extension(auth): Extension<Authenticated>,
    Path(id): Path<String>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let t = texts(&headers, &q);
    let person = match signed_in(&c, &auth, t) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let details = match Alerts(c.core.clone())
        .fetch_alert_details(as_person(&person, FetchAlertDetailsRequest { alert_id: id }))
        .await
    {
        Ok(d) => d.into_inner(),
        Err(s) => return refused(&person, &s),
    };
    let alert = details.alert.unwrap_or_default();
    let r = row(t, &alert);
    let mine = alert.state == PbState::Claimed as i32 && person.who == r.claimed_by;
    let granted = classes(&details.granted_classes);
    let mut fields = Vec::new();
    if let Some(event) = details.envelope.as_ref().and_then(|e| e.event.as_ref()) {
        event_fields(c.core.schema.pool(), event, &mut fields);
    }
    page(
        AlertPage {
            t,
            frame: person.frame(t.alert),
            id: r.id,
            kind: r.kind,
            urgency: r.urgency,
            state: r.state,
            claimed_by: r.claimed_by,
            case_id: alert.case_id,
            granted,
            fields,
            claimable: r.claimable,
            mine,
            outcomes: vec![
                ("child-safe", t.outcome_child_safe),
                ("investigation-opened", t.outcome_investigation_opened),
                ("referred", t.outcome_referred),
                ("no-action", t.outcome_no_action),
                ("duplicate", t.outcome_duplicate),
            ],
            csrf: c.forms.token(&person.principal),
        }
        .render(),
        &q,
        t,
    )
}

/// Every field the event holds, as (path, value) in the proto's order.
fn event_fields(
    pool: &prost_reflect::DescriptorPool,
    event: &henvis_proto::henvis::events::v1::Event,
    out: &mut Vec<(String, String)>,
) {
    use prost::Message as _;
    use prost_reflect::{DynamicMessage, ReflectMessage as _, Value};
    let Some(desc) = pool.get_message_by_name("henvis.events.v1.Event") else {
        return;
    };
    let Ok(message) = DynamicMessage::decode(desc, event.encode_to_vec().as_slice()) else {
        return;
    };
    fn walk(m: &DynamicMessage, prefix: &str, out: &mut Vec<(String, String)>) {
        for (field, value) in m.fields() {
            let path = if prefix.is_empty() {
                field.name().to_owned()
            } else {
                format!("{prefix}.{}", field.name())
            };
            match value {
                Value::Message(inner) if inner.descriptor().full_name() == "google.protobuf.Timestamp" => {
                    let seconds = inner.get_field_by_name("seconds").and_then(|v| v.as_i64()).unwrap_or(0);
                    out.push((path, rfc3339(Some(&prost_types::Timestamp { seconds, nanos: 0 }))));
                }
                Value::Message(inner) => walk(inner, &path, out),
                Value::List(items) => {
                    let text: Vec<String> = items.iter().map(scalar).collect();
                    out.push((path, text.join(", ")));
                }
                other => out.push((path, scalar(other))),
            }
        }
    }
    fn scalar(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::I32(n) | Value::EnumNumber(n) => n.to_string(),
            Value::I64(n) => n.to_string(),
            Value::U32(n) => n.to_string(),
            Value::U64(n) => n.to_string(),
            Value::F32(n) => n.to_string(),
            Value::F64(n) => n.to_string(),
            Value::Bytes(b) => format!("{} bytes", b.len()),
            Value::Message(m) => m.descriptor().name().to_owned(),
            Value::List(l) => format!("{} items", l.len()),
            Value::Map(m) => format!("{} entries", m.len()),
        }
    }
    walk(&message, "", out);
}

#[derive(serde::Deserialize)]
struct ClaimForm {
    #[serde(default)]
    csrf: String,
}

/// Claims an alert for the signed-in person; refused without the person's form token.
async fn claim(
    State(c): State<Console>,
    Extension(auth): Extension<Authenticated>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ClaimForm>,
) -> Response {
    let person = match poster(&c, &auth, &headers, &form.csrf) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    match Alerts(c.core.clone())
        .claim_alert(as_person(&person, ClaimAlertRequest { alert_id: id }))
        .await
    {
        Ok(_) => Redirect::to("/alerts").into_response(),
        Err(s) => refused(&person, &s),
    }
}

#[derive(Template)]
#[template(path = "open_case.html")]
struct OpenCasePage<'a> {
    t: &'a Texts,
    frame: Frame<'a>,
    cases: Vec<henvis_proto::henvis::broker::v1::GuardianCase>,
}

#[derive(serde::Deserialize, Default)]
struct CaseQuery {
    case_id: Option<String>,
    lang: Option<String>,
}

/// Opens a case by its id (a form, then the case's page).
async fn open_case(
    State(c): State<Console>,
    Extension(auth): Extension<Authenticated>,
    Query(q): Query<CaseQuery>,
    headers: HeaderMap,
) -> Response {
    let lang = LangQuery { lang: q.lang.clone() };
    let t = texts(&headers, &lang);
    let person = match signed_in(&c, &auth, t) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    if let Some(case) = q.case_id.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        return match henvis_domain::CaseId::parse(case) {
            Ok(case) => Redirect::to(&format!("/cases/{case}")).into_response(),
            Err(e) => refused(
                &person,
                &tonic::Status::invalid_argument(format!("case_id: expected {}", e.expected)),
            ),
        };
    }
    use henvis_proto::henvis::broker::v1::referral_service_server::ReferralService as _;
    let cases = match crate::submit::Referrals(c.core.clone())
        .list_guardian_cases(as_person(
            &person,
            henvis_proto::henvis::broker::v1::ListGuardianCasesRequest {},
        ))
        .await
    {
        Ok(r) => r.into_inner().cases,
        Err(s) => return refused(&person, &s),
    };
    page(
        OpenCasePage {
            t,
            frame: person.frame(t.cases),
            cases,
        }
        .render(),
        &lang,
        t,
    )
}

/// One decision as the timeline shows it.
struct DecisionRow {
    event_id: String,
    message_type: String,
    sender: String,
    decided_at: String,
    delivered: Vec<String>,
    withheld: Vec<String>,
}

#[derive(Template)]
#[template(path = "case.html")]
struct CasePage<'a> {
    t: &'a Texts,
    frame: Frame<'a>,
    case_id: String,
    decisions: Vec<DecisionRow>,
    consents: Vec<ConsentRow>,
    never_disclose: String,
    csrf: String,
}

/// One of the guardian's consents as the case page lists it.
struct ConsentRow {
    id: String,
    covers: String,
    valid: String,
    state: &'static str,
    withdrawable: bool,
}

fn consent_state(t: &Texts, state: &str) -> &'static str {
    let da = t.lang == Lang::Da;
    match (state, da) {
        ("in_force", false) => "in force",
        ("in_force", true) => "gældende",
        ("withdrawn", false) => "withdrawn",
        ("withdrawn", true) => "tilbagekaldt",
        ("expired", false) => "expired",
        ("expired", true) => "udløbet",
        (_, false) => "not valid yet",
        (_, true) => "endnu ikke gyldigt",
    }
}

/// The never-disclose list in the form's own notation (see `parse_never_disclose`).
fn never_disclose_text(list: &[henvis_proto::henvis::events::v1::NeverDiscloseEntry]) -> String {
    use henvis_proto::henvis::events::v1::never_disclose_entry::From;
    list.iter()
        .map(|e| {
            let from = match &e.from {
                Some(From::AgencyId(a)) => a.clone(),
                Some(From::AllExcept(l)) => format!("all except {}", l.agency_ids.join(", ")),
                None => String::new(),
            };
            let classes = classes(&e.classes).to_uppercase();
            if classes.is_empty() {
                from
            } else {
                format!("{from}: {classes}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Parses the never-disclose form: one entry per line, `agency-id` or `all except a, b`,
/// optionally `: CLASS, CLASS` (none: the whole event). Agency ids are checked by Submit
/// like any event's; a class name or an empty `all except` is refused here, by line.
fn parse_never_disclose(
    text: &str,
) -> Result<Vec<henvis_proto::henvis::events::v1::NeverDiscloseEntry>, tonic::Status> {
    use henvis_proto::henvis::events::v1::{AgencyList, NeverDiscloseEntry, never_disclose_entry::From};
    let split = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let (from, classes) = line.split_once(':').unwrap_or((line, ""));
        let from = from.trim();
        let from = match from.strip_prefix("all except") {
            Some(rest) => {
                let ids = split(rest);
                if ids.is_empty() {
                    return Err(tonic::Status::invalid_argument(format!(
                        "never_disclose line {}: `all except` needs the agency ids kept out of it",
                        i + 1
                    )));
                }
                From::AllExcept(AgencyList { agency_ids: ids })
            }
            None => From::AgencyId(from.to_owned()),
        };
        let classes = split(classes)
            .iter()
            .map(|c| {
                c.to_uppercase()
                    .parse::<henvis_domain::Class>()
                    .map(|c| c as i32)
                    .map_err(|_| {
                        tonic::Status::invalid_argument(format!(
                            "never_disclose line {}: class `{c}`: expected one of {}",
                            i + 1,
                            henvis_domain::Class::ALL.map(henvis_domain::Class::as_str).join(", ")
                        ))
                    })
            })
            .collect::<Result<Vec<i32>, _>>()?;
        out.push(NeverDiscloseEntry {
            from: Some(from),
            classes,
        });
    }
    Ok(out)
}

fn classes(list: &[i32]) -> String {
    list.iter()
        .filter_map(|g| henvis_proto::henvis::options::v1::Sensitivity::try_from(*g).ok())
        .map(|s| s.as_str_name().trim_start_matches("SENSITIVITY_").to_lowercase())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A case as its guardian sees it: every decision (who received which classes on what
/// grounds, what was withheld and why), the consents routes rested on, and the forms to
/// withdraw or record consent. Answered by the service's GetCaseDecisions as the caller:
/// only the case's guardian gets it.
async fn case_page(
    State(c): State<Console>,
    Extension(auth): Extension<Authenticated>,
    Path(case_id): Path<String>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    use henvis_proto::henvis::broker::v1::{GetCaseDecisionsRequest, referral_service_server::ReferralService as _};
    let t = texts(&headers, &q);
    let person = match signed_in(&c, &auth, t) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let view = match crate::submit::Referrals(c.core.clone())
        .get_case_decisions(as_person(&person, GetCaseDecisionsRequest { case_id }))
        .await
    {
        Ok(v) => v.into_inner(),
        Err(s) => return refused(&person, &s),
    };
    let decisions = view
        .decisions
        .iter()
        .map(|d| DecisionRow {
            event_id: d.event_id.clone(),
            message_type: d.message_type.clone(),
            sender: d.sender_agency_id.clone(),
            decided_at: rfc3339(d.decided_at.as_ref()),
            delivered: d
                .delivered
                .iter()
                .map(|r| {
                    let mut grounds = r.legal_bases.clone();
                    grounds.extend(
                        r.consent_ids
                            .iter()
                            .map(|c| format!("{} {c}", t.consent.to_lowercase())),
                    );
                    format!("{} ({}; {})", r.agency_id, classes(&r.classes), grounds.join(", "))
                })
                .collect(),
            withheld: d
                .withheld
                .iter()
                .map(|w| {
                    let to = if w.agency_id.is_empty() {
                        &w.rule_id
                    } else {
                        &w.agency_id
                    };
                    format!("{to}: {} — {}", w.reason, w.explanation)
                })
                .collect(),
        })
        .collect();
    let consents = view
        .consents
        .iter()
        .map(|k| {
            let mut covers = k.recipient_agency_ids.clone();
            covers.extend(k.recipient_sectors.iter().cloned());
            if !k.message_types.is_empty() {
                covers.push(format!("({})", k.message_types.join(", ")));
            }
            ConsentRow {
                id: k.consent_id.clone(),
                covers: covers.join(", "),
                valid: format!(
                    "{} – {}",
                    rfc3339(k.valid_from.as_ref()),
                    rfc3339(k.valid_until.as_ref())
                ),
                state: consent_state(t, &k.state),
                withdrawable: k.state == "in_force" || k.state == "not_yet_valid",
            }
        })
        .collect();
    page(
        CasePage {
            t,
            frame: person.frame(t.cases),
            case_id: view.case_id,
            decisions,
            consents,
            never_disclose: never_disclose_text(&view.never_disclose),
            csrf: c.forms.token(&person.principal),
        }
        .render(),
        &q,
        t,
    )
}

#[derive(serde::Deserialize)]
struct NeverDiscloseForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    entries: String,
}

/// Replaces the case's never-disclose list with the form's, through the service's Submit.
async fn replace_never_disclose(
    State(c): State<Console>,
    Extension(auth): Extension<Authenticated>,
    Path(case_id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<NeverDiscloseForm>,
) -> Response {
    use henvis_proto::henvis::events::v1::{NeverDiscloseUpdated, event::Kind};
    let person = match poster(&c, &auth, &headers, &form.csrf) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    match parse_never_disclose(&form.entries) {
        Ok(entries) => {
            submit_as(
                &c,
                &person,
                case_id,
                Kind::NeverDiscloseUpdated(NeverDiscloseUpdated { entries }),
            )
            .await
        }
        Err(s) => refused(&person, &s),
    }
}

/// One line of the subject access report.
struct ReportRow {
    at: String,
    what: String,
    event: String,
    details: String,
    deferred: bool,
}

#[derive(Template)]
#[template(path = "report.html")]
struct ReportPage<'a> {
    t: &'a Texts,
    frame: Frame<'a>,
    case_id: String,
    report_id: String,
    generated_at: String,
    deferral: String,
    entries: Vec<ReportRow>,
}

/// The subject access report on a case, for its guardian: the service's
/// GetSubjectAccessReport as the caller (which records that it was given).
async fn report_page(
    State(c): State<Console>,
    Extension(auth): Extension<Authenticated>,
    Path(case_id): Path<String>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    use henvis_proto::henvis::broker::v1::{
        GetSubjectAccessReportRequest, ReportEvent, referral_service_server::ReferralService as _, report_entry::Entry,
    };
    let t = texts(&headers, &q);
    let person = match signed_in(&c, &auth, t) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let report = match crate::submit::Referrals(c.core.clone())
        .get_subject_access_report(as_person(&person, GetSubjectAccessReportRequest { case_id }))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => return refused(&person, &s),
    };
    let event = |e: Option<&ReportEvent>| {
        e.map_or_else(String::new, |e| {
            format!("{} {} ({})", e.message_type, e.event_id, e.sender_agency_id)
        })
    };
    let entries = report
        .entries
        .iter()
        .map(|e| {
            let (what, ev, details) = match &e.entry {
                Some(Entry::Delivered(d)) => (
                    t.lang.pick("leveret", "delivered"),
                    event(d.event.as_ref()),
                    format!(
                        "{}: {}; {}{}",
                        d.recipient_agency_id,
                        classes(&d.classes),
                        d.legal_bases.join(", "),
                        if d.consent_ids.is_empty() {
                            String::new()
                        } else {
                            format!("; {}", d.consent_ids.join(", "))
                        }
                    ),
                ),
                Some(Entry::Withheld(w)) => (
                    t.lang.pick("tilbageholdt", "withheld"),
                    event(w.event.as_ref()),
                    format!("{}: {} — {}", w.recipient_agency_id, w.reason, w.explanation),
                ),
                Some(Entry::CaseChanged(ch)) => (
                    t.lang.pick("sagen ændret", "case changed"),
                    event(ch.event.as_ref()),
                    ch.change.clone(),
                ),
                Some(Entry::AlertAccess(a)) => (
                    t.lang.pick("adgang til advarsel", "alert access"),
                    a.alert_id.clone(),
                    format!("{} {} ({})", a.action, a.person_id, a.district_agency_id),
                ),
                Some(Entry::Reported(r)) => (
                    t.lang.pick("rapport givet", "report given"),
                    r.report_id.clone(),
                    r.requested_by.clone(),
                ),
                None => ("", String::new(), String::new()),
            };
            ReportRow {
                at: rfc3339(e.at.as_ref()),
                what: what.to_owned(),
                event: ev,
                details,
                deferred: e.deferred,
            }
        })
        .collect();
    page(
        ReportPage {
            t,
            frame: person.frame(t.report),
            case_id: report.case_id,
            report_id: report.report_id,
            generated_at: rfc3339(report.generated_at.as_ref()),
            deferral: report.deferral.map(|d| d.statement).unwrap_or_default(),
            entries,
        }
        .render(),
        &q,
        t,
    )
}

#[derive(serde::Deserialize)]
struct WithdrawForm {
    #[serde(default)]
    csrf: String,
    consent_id: String,
    #[serde(default)]
    reason: String,
}

#[derive(serde::Deserialize)]
struct RecordForm {
    #[serde(default)]
    csrf: String,
    consent_id: String,
    recipients: String,
    days: i64,
}

/// Submits `event` on `case_id` as the signed-in agency through the service's own Submit
/// (every check, guard and refusal as over gRPC), then shows the case again.
async fn submit_as(
    c: &Console,
    person: &Person,
    case_id: String,
    event: henvis_proto::henvis::events::v1::event::Kind,
) -> Response {
    use henvis_proto::henvis::broker::v1::{SubmitRequest, referral_service_server::ReferralService as _};
    let request = SubmitRequest {
        // a new key per form post: the console's own retry would be a new post
        idempotency_key: format!("console-{}", uuid::Uuid::new_v4()),
        case_id: case_id.clone(),
        event: Some(henvis_proto::henvis::events::v1::Event { kind: Some(event) }),
        sender: None,
        actor_id: "console".into(),
    };
    match crate::submit::Referrals(c.core.clone())
        .submit(as_person(person, request))
        .await
    {
        Ok(_) => Redirect::to(&format!("/cases/{case_id}")).into_response(),
        Err(s) => refused(person, &s),
    }
}

async fn withdraw_consent(
    State(c): State<Console>,
    Extension(auth): Extension<Authenticated>,
    Path(case_id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<WithdrawForm>,
) -> Response {
    use henvis_proto::henvis::events::v1::{ConsentWithdrawn, event::Kind};
    let person = match poster(&c, &auth, &headers, &form.csrf) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let event = Kind::ConsentWithdrawn(ConsentWithdrawn {
        consent_id: form.consent_id,
        reason: form.reason,
    });
    submit_as(&c, &person, case_id, event).await
}

async fn record_consent(
    State(c): State<Console>,
    Extension(auth): Extension<Authenticated>,
    Path(case_id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<RecordForm>,
) -> Response {
    use henvis_proto::henvis::events::v1::{ConsentRecorded, event::Kind};
    let person = match poster(&c, &auth, &headers, &form.csrf) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let now = henvis_runtime::unix_now();
    let event = Kind::ConsentRecorded(ConsentRecorded {
        consent_id: form.consent_id,
        recipient_agency_ids: form
            .recipients
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        valid_from: Some(prost_types::Timestamp {
            seconds: now - 60,
            nanos: 0,
        }),
        valid_until: Some(prost_types::Timestamp {
            seconds: now + form.days.clamp(1, 3650) * 24 * 3600,
            nanos: 0,
        }),
        ..Default::default()
    });
    submit_as(&c, &person, case_id, event).await
}

/// The person posting a form, with their texts; refused without their form token.
fn poster(c: &Console, auth: &Authenticated, headers: &HeaderMap, token: &str) -> Result<Person, Box<Response>> {
    let t = texts(headers, &LangQuery::default());
    let person = signed_in(c, auth, t)?;
    if let Err(s) = c.forms.check(&person.principal, token, t.lang) {
        return Err(Box::new(refused(&person, &s)));
    }
    Ok(person)
}

#[derive(serde::Deserialize)]
struct HandOverForm {
    #[serde(default)]
    csrf: String,
    to_person_id: String,
}

/// Hands the alert the signed-in person holds to a colleague of the district.
async fn hand_over(
    State(c): State<Console>,
    Extension(auth): Extension<Authenticated>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HandOverForm>,
) -> Response {
    use henvis_proto::henvis::police::v1::HandOverAlertRequest;
    let person = match poster(&c, &auth, &headers, &form.csrf) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let request = HandOverAlertRequest {
        alert_id: id,
        to_person_id: form.to_person_id.trim().to_owned(),
    };
    match Alerts(c.core.clone())
        .hand_over_alert(as_person(&person, request))
        .await
    {
        Ok(_) => Redirect::to("/alerts").into_response(),
        Err(s) => refused(&person, &s),
    }
}

#[derive(serde::Deserialize)]
struct CloseForm {
    #[serde(default)]
    csrf: String,
    outcome: String,
}

/// Closes the alert the signed-in person holds, with its outcome.
async fn close(
    State(c): State<Console>,
    Extension(auth): Extension<Authenticated>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<CloseForm>,
) -> Response {
    use henvis_proto::henvis::police::v1::{AlertOutcome as O, CloseAlertRequest};
    let person = match poster(&c, &auth, &headers, &form.csrf) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let outcome = match form.outcome.as_str() {
        "child-safe" => O::ChildSafe,
        "investigation-opened" => O::InvestigationOpened,
        "referred" => O::Referred,
        "no-action" => O::NoAction,
        "duplicate" => O::Duplicate,
        _ => O::Unspecified,
    };
    let request = CloseAlertRequest {
        alert_id: id,
        outcome: outcome as i32,
    };
    match Alerts(c.core.clone()).close_alert(as_person(&person, request)).await {
        Ok(_) => Redirect::to("/alerts").into_response(),
        Err(s) => refused(&person, &s),
    }
}
