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
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{
        Html, IntoResponse, Redirect, Response,
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
use henvis_runtime::https::Authenticated;

use crate::{Core, alerts::Alerts};

/// The console's state: the service core and the key its form tokens are made with.
#[derive(Clone)]
struct Console {
    core: Arc<Core>,
    csrf: Arc<ring::hmac::Key>,
}

/// The console's routes for the service `core` runs.
pub(crate) fn router(core: Arc<Core>) -> anyhow::Result<Router> {
    let rng = ring::rand::SystemRandom::new();
    let csrf = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
        .map_err(|_| anyhow::anyhow!("no randomness for the console's form key"))?;
    Ok(Router::new()
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
        .route("/static/console.js", get(script))
        .route("/static/console.css", get(style))
        .layer(middleware::from_fn(secure_headers))
        .with_state(Console {
            core,
            csrf: Arc::new(csrf),
        }))
}

/// Headers on every answer: nothing cached, nothing from elsewhere, no framing, no
/// referrer.
async fn secure_headers(req: axum::extract::Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    res
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../static/console.js"),
    )
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../static/console.css"),
    )
}

/// The console's text in one language.
#[derive(Debug)]
struct Texts {
    lang: &'static str,
    signed_in_as: &'static str,
    language: &'static str,
    home: &'static str,
    alerts: &'static str,
    alerts_intro: &'static str,
    nothing_here: &'static str,
    logged_notice: &'static str,
    refused: &'static str,
    not_allowed: &'static str,
    no_certificate: &'static str,
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
    forged: &'static str,
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
}

const EN: Texts = Texts {
    lang: "en",
    signed_in_as: "Signed in as",
    language: "Language",
    home: "Your henvis",
    alerts: "Case alerts",
    alerts_intro: "your district's alerts as they arrive; claim one to take it.",
    nothing_here: "There is nothing for you on this service yet. Agency systems use the gRPC API.",
    logged_notice: "Everything you open here is recorded in the audit.",
    refused: "Not signed in",
    not_allowed: "Not allowed",
    no_certificate: "Present your employee certificate to use the henvis console.",
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
    hand_over: "Hand over",
    to_person: "To contact person",
    close_alert: "Close",
    outcome: "Outcome",
    outcome_child_safe: "The child is safe",
    outcome_investigation_opened: "Investigation opened",
    outcome_referred: "Referred",
    outcome_no_action: "No action",
    outcome_duplicate: "Duplicate",
    forged: "The form was not sent from this console (its token is missing or wrong); nothing was done.",
};

const DA: Texts = Texts {
    lang: "da",
    signed_in_as: "Logget ind som",
    language: "Sprog",
    home: "Din henvis",
    alerts: "Sagsadvarsler",
    alerts_intro: "din kreds' advarsler, når de kommer; tag en for at overtage den.",
    nothing_here: "Der er endnu intet til dig på denne tjeneste. Myndighedernes systemer bruger gRPC-API'et.",
    logged_notice: "Alt, hvad du åbner her, registreres i revisionssporet.",
    refused: "Ikke logget ind",
    not_allowed: "Ikke tilladt",
    no_certificate: "Vis dit medarbejdercertifikat for at bruge henvis-konsollen.",
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
    hand_over: "Overdrag",
    to_person: "Til kontaktperson",
    close_alert: "Luk",
    outcome: "Udfald",
    outcome_child_safe: "Barnet er i sikkerhed",
    outcome_investigation_opened: "Efterforskning indledt",
    outcome_referred: "Henvist",
    outcome_no_action: "Ingen handling",
    outcome_duplicate: "Dublet",
    forged: "Formularen blev ikke sendt fra denne konsol (dens token mangler eller er forkert); intet blev gjort.",
};

#[derive(serde::Deserialize, Default)]
struct LangQuery {
    lang: Option<String>,
}

/// The language: `?lang=` (remembered in a cookie), else the cookie, else the browser's
/// first choice; Danish or English.
fn texts(headers: &HeaderMap, query: &LangQuery) -> &'static Texts {
    let pick = |v: &str| if v.trim().starts_with("da") { &DA } else { &EN };
    if let Some(l) = &query.lang {
        return pick(l);
    }
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("lang="));
    if let Some(c) = cookie {
        return pick(c);
    }
    headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .map_or(&EN, pick)
}

/// A page, with the language cookie set when the language was chosen by `?lang=`.
fn page(html: Result<String, askama::Error>, query: &LangQuery, t: &Texts) -> Response {
    match html {
        Ok(body) => {
            let mut res = Html(body).into_response();
            if query.lang.is_some()
                && let Ok(v) =
                    HeaderValue::from_str(&format!("lang={}; Path=/; Secure; HttpOnly; SameSite=Strict", t.lang))
            {
                res.headers_mut().insert(header::SET_COOKIE, v);
            }
            res
        }
        Err(e) => {
            tracing::error!(error = %e, "console page not rendered");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "refused.html")]
struct RefusedPage<'a> {
    t: &'a Texts,
    title: &'a str,
    who: &'a str,
    role: &'a str,
    reason: &'a str,
}

/// The signed-in person, or the page that says why nobody is.
struct Person {
    principal: Principal,
    who: String,
    role: String,
}

fn signed_in(c: &Console, auth: &Authenticated, t: &Texts) -> Result<Person, Box<Response>> {
    let refuse = |status: StatusCode, reason: &str| {
        let html = RefusedPage {
            t,
            title: t.refused,
            who: "—",
            role: "",
            reason,
        }
        .render();
        let mut res = page(html, &LangQuery::default(), t);
        *res.status_mut() = status;
        res
    };
    let principal = match &auth.0 {
        Ok(p) => p.clone(),
        Err(_) => return Err(Box::new(refuse(StatusCode::UNAUTHORIZED, t.no_certificate))),
    };
    if let Err(reason) = crate::auth::admit(&c.core.directory.current(), &principal) {
        henvis_runtime::refusals::record(
            henvis_runtime::refusals::Refusal::NotAdmitted,
            &principal.to_string(),
            &reason,
        );
        return Err(Box::new(refuse(StatusCode::FORBIDDEN, &reason)));
    }
    let (who, role) = match &principal {
        Principal::Person(p) => (p.to_string(), t.contact_person.to_owned()),
        other => (other.path(), String::new()),
    };
    Ok(Person { principal, who, role })
}

/// A gRPC request as `person`, for the service's own handlers.
fn as_person<T>(person: &Person, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.extensions_mut().insert(person.principal.clone());
    req
}

/// A refusal by the service's handler, shown as it would be told over gRPC.
fn refused(person: &Person, t: &Texts, status: &tonic::Status) -> Response {
    let html = RefusedPage {
        t,
        title: t.not_allowed,
        who: &person.who,
        role: &person.role,
        reason: status.message(),
    }
    .render();
    let mut res = page(html, &LangQuery::default(), t);
    *res.status_mut() = match status.code() {
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument => StatusCode::CONFLICT,
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    res
}

/// The form token of `person`: an HMAC of their principal under the console's key.
fn csrf_token(c: &Console, person: &Person) -> String {
    hex::encode(ring::hmac::sign(&c.csrf, person.principal.uri().as_bytes()).as_ref())
}

fn csrf_ok(c: &Console, person: &Person, token: &str) -> bool {
    hex::decode(token).is_ok_and(|t| ring::hmac::verify(&c.csrf, person.principal.uri().as_bytes(), &t).is_ok())
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage<'a> {
    t: &'a Texts,
    title: &'a str,
    who: &'a str,
    role: &'a str,
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
            title: t.home,
            who: &person.who,
            role: &person.role,
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

fn rfc3339(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.seconds).ok())
        .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
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
    title: &'a str,
    who: &'a str,
    role: &'a str,
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
                title: t.alerts,
                who: &person.who,
                role: &person.role,
                alerts,
                csrf: csrf_token(&c, &person),
            }
            .render(),
            &q,
            t,
        ),
        Err(s) => refused(&person, t, &s),
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
                csrf: csrf_token(&c, &person),
            }
            .render(),
            &q,
            t,
        ),
        Err(s) => refused(&person, t, &s),
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
        Err(s) => return refused(&person, t, &s),
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
    title: &'a str,
    who: &'a str,
    role: &'a str,
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
        Err(s) => return refused(&person, t, &s),
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
            title: t.alert,
            who: &person.who,
            role: &person.role,
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
            csrf: csrf_token(&c, &person),
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
    let (person, t) = match poster(&c, &auth, &headers, &form.csrf) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    match Alerts(c.core.clone())
        .claim_alert(as_person(&person, ClaimAlertRequest { alert_id: id }))
        .await
    {
        Ok(_) => Redirect::to("/alerts").into_response(),
        Err(s) => refused(&person, t, &s),
    }
}

#[derive(Template)]
#[template(path = "open_case.html")]
struct OpenCasePage<'a> {
    t: &'a Texts,
    title: &'a str,
    who: &'a str,
    role: &'a str,
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
                t,
                &tonic::Status::invalid_argument(format!("case_id: expected {}", e.expected)),
            ),
        };
    }
    page(
        OpenCasePage {
            t,
            title: t.cases,
            who: &person.who,
            role: &person.role,
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
    title: &'a str,
    who: &'a str,
    role: &'a str,
    case_id: String,
    decisions: Vec<DecisionRow>,
    consents: Vec<String>,
    csrf: String,
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
        Err(s) => return refused(&person, t, &s),
    };
    let mut consents: Vec<String> = Vec::new();
    let decisions = view
        .decisions
        .iter()
        .map(|d| {
            for r in &d.delivered {
                for id in &r.consent_ids {
                    if !consents.contains(id) {
                        consents.push(id.clone());
                    }
                }
            }
            DecisionRow {
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
            }
        })
        .collect();
    page(
        CasePage {
            t,
            title: t.cases,
            who: &person.who,
            role: &person.role,
            case_id: view.case_id,
            decisions,
            consents,
            csrf: csrf_token(&c, &person),
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
    t: &Texts,
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
        Err(s) => refused(person, t, &s),
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
    let (person, t) = match poster(&c, &auth, &headers, &form.csrf) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let event = Kind::ConsentWithdrawn(ConsentWithdrawn {
        consent_id: form.consent_id,
        reason: form.reason,
    });
    submit_as(&c, &person, t, case_id, event).await
}

async fn record_consent(
    State(c): State<Console>,
    Extension(auth): Extension<Authenticated>,
    Path(case_id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<RecordForm>,
) -> Response {
    use henvis_proto::henvis::events::v1::{ConsentRecorded, event::Kind};
    let (person, t) = match poster(&c, &auth, &headers, &form.csrf) {
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
    submit_as(&c, &person, t, case_id, event).await
}

/// The person posting a form, with their texts; refused without their form token.
fn poster(
    c: &Console,
    auth: &Authenticated,
    headers: &HeaderMap,
    token: &str,
) -> Result<(Person, &'static Texts), Box<Response>> {
    let t = texts(headers, &LangQuery::default());
    let person = signed_in(c, auth, t)?;
    if !csrf_ok(c, &person, token) {
        return Err(Box::new(forged(&person, t)));
    }
    Ok((person, t))
}

/// The answer to a form without the person's token.
fn forged(person: &Person, t: &Texts) -> Response {
    henvis_runtime::refusals::record(
        henvis_runtime::refusals::Refusal::ForgedIdentity,
        &person.principal.to_string(),
        "console form without its token",
    );
    refused(person, t, &tonic::Status::permission_denied(t.forged))
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
    let (person, t) = match poster(&c, &auth, &headers, &form.csrf) {
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
        Err(s) => refused(&person, t, &s),
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
    let (person, t) = match poster(&c, &auth, &headers, &form.csrf) {
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
        Err(s) => refused(&person, t, &s),
    }
}
