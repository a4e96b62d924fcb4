//! What every henvis web console shares (the sector services' consoles for contact persons
//! and guardians, the admin service's for administrators): the page frame and its text in
//! Danish and English, the headers on every answer, sign-in by client certificate, the form
//! token, the refusal page and the static assets. Each service's console adds its own pages
//! and calls its own service's handlers as the signed-in person.
//!
//! Every answer is `Cache-Control: no-store` with a strict Content-Security-Policy (no
//! inline script or style, nothing from elsewhere, no framing) and no referrer; pages put
//! ids only in URLs and titles; every form carries a token bound to the signed-in person,
//! because the browser would present the person's certificate to any site's cross-site
//! post.

use askama::Template;
use axum::{
    Router,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use henvis_domain::Principal;

use crate::{
    https::Authenticated,
    refusals::{self, Refusal},
};

/// The frame's text in one language (each console has its own page texts besides).
#[derive(Debug)]
pub struct Chrome {
    /// The language code (`da`, `en`).
    pub lang: &'static str,
    /// Before the signed-in person's id.
    pub signed_in_as: &'static str,
    /// The language menu's label.
    pub language: &'static str,
    /// The page menu's label.
    pub menu: &'static str,
    /// Title of the page for a request without a usable certificate.
    pub refused: &'static str,
    /// Title of a refusal.
    pub not_allowed: &'static str,
    /// Why nothing is shown without a certificate.
    pub no_certificate: &'static str,
    /// Why a form without its token did nothing.
    pub forged: &'static str,
    /// That what people open and do is audited.
    pub logged_notice: &'static str,
}

const CHROME_EN: Chrome = Chrome {
    lang: "en",
    signed_in_as: "Signed in as",
    language: "Language",
    menu: "Pages",
    refused: "Not signed in",
    not_allowed: "Not allowed",
    no_certificate: "Present your employee certificate to use the henvis console.",
    forged: "The form was not sent from this console (its token is missing or wrong); nothing was done.",
    logged_notice: "Everything you open and do here is recorded in the audit.",
};

const CHROME_DA: Chrome = Chrome {
    lang: "da",
    signed_in_as: "Logget ind som",
    language: "Sprog",
    menu: "Sider",
    refused: "Ikke logget ind",
    not_allowed: "Ikke tilladt",
    no_certificate: "Vis dit medarbejdercertifikat for at bruge henvis-konsollen.",
    forged: "Formularen blev ikke sendt fra denne konsol (dens token mangler eller er forkert); intet blev gjort.",
    logged_notice: "Alt, hvad du åbner og gør her, registreres i revisionssporet.",
};

/// The console's two languages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Danish.
    Da,
    /// English.
    En,
}

impl Lang {
    /// Danish for any `da…` tag, else English.
    fn of(tag: &str) -> Self {
        if tag.trim().starts_with("da") {
            Self::Da
        } else {
            Self::En
        }
    }

    /// The frame's text in this language.
    pub fn chrome(self) -> &'static Chrome {
        match self {
            Self::Da => &CHROME_DA,
            Self::En => &CHROME_EN,
        }
    }

    /// `a` in Danish, `b` in English.
    pub fn pick<T>(self, da: T, en: T) -> T {
        match self {
            Self::Da => da,
            Self::En => en,
        }
    }
}

/// `?lang=` of a page.
#[derive(serde::Deserialize, Default, Debug, Clone)]
pub struct LangQuery {
    /// `da` or `en`.
    pub lang: Option<String>,
}

/// The language of a request: `?lang=` (remembered in a cookie by [`page`]), else the
/// cookie, else the browser's first choice.
pub fn lang(headers: &HeaderMap, query: &LangQuery) -> Lang {
    if let Some(l) = &query.lang {
        return Lang::of(l);
    }
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("lang="));
    if let Some(c) = cookie {
        return Lang::of(c);
    }
    headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .map_or(Lang::En, Lang::of)
}

/// One link of a console's menu: (path, label).
pub type NavItem = (&'static str, &'static str);

/// What the frame of every page shows: its title (never child data), who is signed in and
/// as what, and the console's menu.
pub struct Frame<'a> {
    /// The frame's text.
    pub chrome: &'static Chrome,
    /// The page's title (never child data).
    pub title: &'a str,
    /// The signed-in principal's id.
    pub who: &'a str,
    /// What they are signed in as (e.g. `contact person`), or empty.
    pub role: &'a str,
    /// The console's menu.
    pub nav: &'a [NavItem],
}

/// A rendered page; when the language was chosen with `?lang=`, the choice is remembered.
pub fn page(html: Result<String, askama::Error>, query: &LangQuery, lang: Lang) -> Response {
    match html {
        Ok(body) => {
            let mut res = Html(body).into_response();
            if query.lang.is_some()
                && let Ok(v) = HeaderValue::from_str(&format!(
                    "lang={}; Path=/; Secure; HttpOnly; SameSite=Strict",
                    lang.chrome().lang
                ))
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
    frame: Frame<'a>,
    reason: &'a str,
}

/// The page saying why nothing was done, with the HTTP status matching the service's
/// gRPC answer.
pub fn refused(frame: Frame<'_>, status: &tonic::Status) -> Response {
    let lang = Lang::of(frame.chrome.lang);
    let mut res = page(
        RefusedPage {
            frame,
            reason: status.message(),
        }
        .render(),
        &LangQuery::default(),
        lang,
    );
    *res.status_mut() = match status.code() {
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument | tonic::Code::AlreadyExists => {
            StatusCode::CONFLICT
        }
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    res
}

/// The principal a request's certificate proves, if `admit` lets them use this console;
/// else the page saying why not (no certificate, revoked, not admitted).
pub fn sign_in(
    auth: &Authenticated,
    lang: Lang,
    admit: impl FnOnce(&Principal) -> Result<(), String>,
) -> Result<Principal, Box<Response>> {
    let chrome = lang.chrome();
    let nobody = |title| Frame {
        chrome,
        title,
        who: "—",
        role: "",
        nav: &[],
    };
    let principal = match &auth.0 {
        Ok(p) => p.clone(),
        Err(_) => {
            return Err(Box::new(refused(
                nobody(chrome.refused),
                &tonic::Status::unauthenticated(chrome.no_certificate),
            )));
        }
    };
    if let Err(reason) = admit(&principal) {
        refusals::record(Refusal::NotAdmitted, &principal.to_string(), "console: not admitted");
        return Err(Box::new(refused(
            nobody(chrome.not_allowed),
            &tonic::Status::permission_denied(reason),
        )));
    }
    Ok(principal)
}

/// A gRPC request as `principal`, for a service's own handlers (what the gRPC layer would
/// have put there after checking the certificate).
pub fn as_principal<T>(principal: &Principal, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.extensions_mut().insert(principal.clone());
    req
}

/// The key form tokens are made with: one per process, so a restart asks people to load
/// the page again before posting.
#[derive(Clone)]
pub struct FormKey(std::sync::Arc<ring::hmac::Key>);

impl FormKey {
    /// A new random key.
    pub fn generate() -> anyhow::Result<Self> {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .map_err(|_| anyhow::anyhow!("no randomness for the console's form key"))?;
        Ok(Self(std::sync::Arc::new(key)))
    }

    /// The form token of `principal`: an HMAC of their URI.
    pub fn token(&self, principal: &Principal) -> String {
        hex::encode(ring::hmac::sign(&self.0, principal.uri().as_bytes()).as_ref())
    }

    /// Whether `token` is `principal`'s; a forged post is recorded as a refusal and
    /// answered in `lang`.
    pub fn check(&self, principal: &Principal, token: &str, lang: Lang) -> Result<(), tonic::Status> {
        let ok = hex::decode(token).is_ok_and(|t| ring::hmac::verify(&self.0, principal.uri().as_bytes(), &t).is_ok());
        if ok {
            return Ok(());
        }
        refusals::record(
            Refusal::ForgedIdentity,
            &principal.to_string(),
            "console form without its token",
        );
        Err(tonic::Status::permission_denied(lang.chrome().forged))
    }
}

/// `app` with the shared assets and the headers every answer carries.
pub fn finish(app: Router) -> Router {
    app.route("/static/console.js", get(script))
        .route("/static/console.css", get(style))
        .layer(middleware::from_fn(secure_headers))
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

/// A timestamp as RFC 3339 (UTC), or empty.
pub fn rfc3339(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.seconds).ok())
        .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}
