//! NATS users and permissions, generated from the names in this crate: each henvis
//! component connects as the user its certificate maps to (`verify_and_map`), and a sector
//! service may touch only its own sector's inbound subjects and its own agencies'
//! deliveries. deploy/nats/auth.conf is this output; a test checks that they agree.

use std::fmt::Write as _;

use henvis_domain::{AgencyId, Directory, Principal, Sector};

use crate::names::*;

/// The NATS user name of a principal: the URI subject alternative name of its certificate,
/// the same name gRPC authenticates (`verify_and_map` tries a certificate's URI SANs before
/// its subject; no user is named after a subject, so a certificate whose URI names no
/// henvis user is refused whatever its common name says).
pub fn nats_user(principal: &Principal) -> String {
    principal.uri()
}

/// Creating a stream or bucket that exists with the same configuration is a no-op; a
/// different one is refused by the server, and no update, purge or delete is allowed: so
/// whichever service starts first creates the whole topology.
fn create_topology(publish: &mut Vec<String>) {
    publish.extend(STREAMS.iter().map(|s| format!("$JS.API.STREAM.CREATE.{s}")));
    publish.extend(BUCKETS.iter().map(|b| format!("$JS.API.STREAM.CREATE.KV_{b}")));
    // every service reads and follows the approved directory changes
    publish.push(format!("$JS.API.STREAM.MSG.GET.KV_{BUCKET_DIRECTORY}"));
    publish.push(format!("$JS.API.DIRECT.GET.KV_{BUCKET_DIRECTORY}.>"));
    publish.push(format!("$JS.API.CONSUMER.CREATE.KV_{BUCKET_DIRECTORY}"));
    publish.push(format!("$JS.API.CONSUMER.CREATE.KV_{BUCKET_DIRECTORY}.>"));
    for op in ["MSG.NEXT", "INFO", "DELETE"] {
        publish.push(format!("$JS.API.CONSUMER.{op}.KV_{BUCKET_DIRECTORY}.*"));
    }
    publish.push(format!("$JS.FC.KV_{BUCKET_DIRECTORY}.>"));
}

/// Raising and clearing `service`'s own alarm that it cannot write the audit (outside the
/// audit, for administrators); alarms hold service names, times and fixed phrases only.
fn raise_audit_alarm(publish: &mut Vec<String>, service: &str) {
    let key = audit_alarm_key(service);
    publish.push(format!("$KV.{BUCKET_ALARMS}.{key}"));
    publish.push(format!("$JS.API.STREAM.MSG.GET.KV_{BUCKET_ALARMS}"));
    publish.push(format!(
        "$JS.API.DIRECT.GET.KV_{BUCKET_ALARMS}.$KV.{BUCKET_ALARMS}.{key}"
    ));
}

/// Sealing and opening case data (keys.rs): reading and creating case keys, and watching
/// the bucket for erasures. Keys are wrapped with the master key, which NATS never sees;
/// a key opens only what the service's other permissions let it read. The bucket's stream
/// keeps one record per key and refuses rollups, so creating is all a publish can do
/// there; `erases`: also the erasure notices (`erased.<case>`, two tokens where a case id
/// is one) and the purge request that removes a key for its tombstone.
fn case_keys(publish: &mut Vec<String>, erases: bool) {
    if erases {
        publish.push(format!("$KV.{BUCKET_CASE_KEYS}.>"));
        publish.push(format!("$JS.API.STREAM.PURGE.KV_{BUCKET_CASE_KEYS}"));
    } else {
        publish.push(format!("$KV.{BUCKET_CASE_KEYS}.*"));
    }
    publish.push(format!("$JS.API.STREAM.MSG.GET.KV_{BUCKET_CASE_KEYS}"));
    publish.push(format!("$JS.API.DIRECT.GET.KV_{BUCKET_CASE_KEYS}.>"));
    publish.push(format!("$JS.API.CONSUMER.CREATE.KV_{BUCKET_CASE_KEYS}"));
    publish.push(format!("$JS.API.CONSUMER.CREATE.KV_{BUCKET_CASE_KEYS}.>"));
    for op in ["MSG.NEXT", "INFO", "DELETE"] {
        publish.push(format!("$JS.API.CONSUMER.{op}.KV_{BUCKET_CASE_KEYS}.*"));
    }
    publish.push(format!("$JS.FC.KV_{BUCKET_CASE_KEYS}.>"));
}

/// What a sector service may publish (including JetStream API requests) and subscribe to.
pub fn sector_permissions(sector: Sector, agencies: &[AgencyId]) -> (Vec<String>, Vec<String>) {
    let mut publish = vec![
        // its own sector's submissions only
        format!("{IN_PREFIX}.{sector}.>"),
        // administrator alerts as itself (status records and case audit: per agency, below)
        audit_admin_subject(sector.as_str()),
        "$JS.API.INFO".to_owned(),
        "$JS.API.STREAM.INFO.*".to_owned(),
        // leader reads of case records (for the workflow guards at Submit); only the router
        // writes them, and no sector service reads the audit: a case's decisions are asked
        // of the router, which answers only the case's guardian
        format!("$JS.API.STREAM.MSG.GET.KV_{BUCKET_CASES}"),
        format!("$JS.API.DIRECT.GET.KV_{BUCKET_CASES}.>"),
    ];
    create_topology(&mut publish);
    raise_audit_alarm(&mut publish, sector.as_str());
    case_keys(&mut publish, false);
    for op in ["MSG.NEXT", "INFO", "DELETE"] {
        publish.push(format!("$JS.API.CONSUMER.{op}.{STREAM_STATUS}.*"));
    }
    if sector == Sector::Police {
        // case alerts: the bucket, its watches and key listings; the alerted events as the
        // router redacted them for the district (copied for an escalation)
        publish.push(format!("$KV.{BUCKET_ALERT_DETAILS}.>"));
        publish.push(format!("$JS.API.STREAM.MSG.GET.KV_{BUCKET_ALERT_DETAILS}"));
        publish.push(format!("$JS.API.DIRECT.GET.KV_{BUCKET_ALERT_DETAILS}.>"));
        publish.push(format!("$KV.{BUCKET_ALERTS}.>"));
        publish.push(format!("$JS.API.STREAM.MSG.GET.KV_{BUCKET_ALERTS}"));
        publish.push(format!("$JS.API.DIRECT.GET.KV_{BUCKET_ALERTS}.>"));
        publish.push(format!("$JS.API.CONSUMER.CREATE.KV_{BUCKET_ALERTS}"));
        publish.push(format!("$JS.API.CONSUMER.CREATE.KV_{BUCKET_ALERTS}.>"));
        for op in ["MSG.NEXT", "INFO", "DELETE"] {
            publish.push(format!("$JS.API.CONSUMER.{op}.KV_{BUCKET_ALERTS}.*"));
        }
        publish.push(format!("$JS.FC.KV_{BUCKET_ALERTS}.>"));
        // the steps a district took on a case's alerts, in the case's audit, as itself
        for a in agencies {
            publish.push(audit_case_subject_pattern(a));
        }
    }
    // each of its agencies: the inbox consumer (only with its own filter) and its status
    for a in agencies {
        let consumer = inbox_consumer(a);
        publish.push(format!(
            "$JS.API.CONSUMER.CREATE.{STREAM_OUT}.{consumer}.{}",
            outbound_filter(a)
        ));
        publish.push(format!("$JS.API.CONSUMER.INFO.{STREAM_OUT}.{consumer}"));
        publish.push(format!("$JS.API.CONSUMER.MSG.NEXT.{STREAM_OUT}.{consumer}"));
        publish.push(format!("$JS.ACK.{STREAM_OUT}.{consumer}.>"));
        publish.push(format!(
            "$JS.API.CONSUMER.CREATE.{STREAM_STATUS}.*.{STATUS_PREFIX}.{a}.>"
        ));
        // its share of IN, taken before each submission
        publish.push(quota_subject(a));
        // status records written as itself only (its Submit, its receipts), for any sender
        publish.push(format!("{STATUS_PREFIX}.*.*.{a}"));
        // its own idempotency records only (they hold its stored envelopes): a retry is
        // answered from them, never from IN, and never from another agency's records
        publish.push(format!("$KV.{BUCKET_IDEMPOTENCY}.{a}.>"));
        publish.push(format!(
            "$JS.API.DIRECT.GET.KV_{BUCKET_IDEMPOTENCY}.$KV.{BUCKET_IDEMPOTENCY}.{a}.>"
        ));
        // a case's routing decisions and subject access report, asked of the router as
        // itself (answered for the case's guardian only)
        for kind in QueryKind::ALL {
            publish.push(query_subject(kind, a));
        }
        // what was delivered to it (a referral response must answer one of those)
        publish.push(format!(
            "$JS.API.DIRECT.GET.KV_{BUCKET_DELIVERED}.$KV.{BUCKET_DELIVERED}.{a}.>"
        ));
    }
    let subscribe = vec![format!("{}.>", inbox_prefix(&Principal::Service(sector.to_string())))];
    (publish, subscribe)
}

/// What nobody may do over NATS, the router and administrators included: delete, purge or
/// reconfigure the audit and the submitted events, or delete single messages of them (the
/// streams also deny delete and purge themselves; these deny the whole-stream operations).
pub fn denied_to_everyone() -> Vec<String> {
    let mut deny = Vec::new();
    for stream in [STREAM_AUDIT, STREAM_CHAIN, STREAM_CHECKPOINTS, STREAM_IN] {
        for op in ["DELETE", "PURGE", "UPDATE", "MSG.DELETE"] {
            deny.push(format!("$JS.API.STREAM.{op}.{stream}"));
        }
    }
    deny
}

/// What the router may not publish beyond [`denied_to_everyone`]: submissions (it routes
/// them and never makes one) and agencies' quota units. Everything else it does: it reads
/// IN, writes OUT, status, audit, dead letters and every bucket, answers queries.
pub fn router_denied() -> Vec<String> {
    let mut deny = denied_to_everyone();
    deny.push(format!("{IN_PREFIX}.>"));
    deny.push(format!("{QUOTA_PREFIX}.>"));
    deny
}

/// What the admin service may do over NATS: keep rule-set governance (its bucket), put
/// the approved set live (the rules bucket), write governance records, its administrator
/// alerts and the giving of subject access reports to the audit, read the audit, the dead
/// letters' subjects and case records (for simulations and what-if replays), destroy a
/// case's key after an approved erasure, and create the topology (a no-op where it
/// exists). No submission, delivery, status or alert; no read of IN, OUT or any agency's
/// records. Administrators themselves have no NATS identity: they call this service over
/// gRPC with their certificates.
pub fn admin_service_permissions() -> (Vec<String>, Vec<String>) {
    let mut publish = vec![
        "$JS.API.INFO".to_owned(),
        "$JS.API.STREAM.INFO.*".to_owned(),
        audit_rules_subject(),
        audit_admin_subject(ADMIN_WRITER),
        // the giving of a subject access report to an administrator, on its case
        format!("{AUDIT_PREFIX}.case.*.{ADMIN_WRITER}"),
    ];
    create_topology(&mut publish);
    raise_audit_alarm(&mut publish, ADMIN_WRITER);
    // an approved erasure destroys the case's key (a tombstone in its place)
    case_keys(&mut publish, true);
    for bucket in [BUCKET_RULES, BUCKET_GOVERNANCE, BUCKET_DIRECTORY] {
        publish.push(format!("$KV.{bucket}.>"));
    }
    for bucket in [BUCKET_RULES, BUCKET_GOVERNANCE, BUCKET_CASES] {
        publish.push(format!("$JS.API.STREAM.MSG.GET.KV_{bucket}"));
        publish.push(format!("$JS.API.DIRECT.GET.KV_{bucket}.>"));
    }
    // delivery marks, to simulate a referral response as Submit and the router see it, and
    // to check the audit accounts for every delivery (ids only)
    publish.push(format!("$JS.API.DIRECT.GET.KV_{BUCKET_DELIVERED}.>"));
    // and alert records, for the steps contact persons took (ids and times only), and
    // every service's audit alarm
    // and case records, for the mapping study's counts (municipality, age presumption)
    for bucket in [BUCKET_DELIVERED, BUCKET_ALERTS, BUCKET_ALARMS, BUCKET_CASES] {
        publish.push(format!("$JS.API.CONSUMER.CREATE.KV_{bucket}.>"));
        for op in ["MSG.NEXT", "INFO", "DELETE"] {
            publish.push(format!("$JS.API.CONSUMER.{op}.KV_{bucket}.*"));
        }
    }
    // the governance bucket's key listing (an ordered consumer)
    publish.push(format!("$JS.API.CONSUMER.CREATE.KV_{BUCKET_GOVERNANCE}"));
    publish.push(format!("$JS.API.CONSUMER.CREATE.KV_{BUCKET_GOVERNANCE}.>"));
    for op in ["MSG.NEXT", "INFO", "DELETE"] {
        publish.push(format!("$JS.API.CONSUMER.{op}.KV_{BUCKET_GOVERNANCE}.*"));
    }
    publish.push(format!("$JS.FC.KV_{BUCKET_GOVERNANCE}.>"));
    for stream in [STREAM_AUDIT, STREAM_CHAIN, STREAM_CHECKPOINTS, STREAM_DEAD] {
        publish.push(format!("$JS.API.CONSUMER.CREATE.{stream}.>"));
        for op in ["MSG.NEXT", "INFO", "DELETE"] {
            publish.push(format!("$JS.API.CONSUMER.{op}.{stream}.*"));
        }
    }
    let subscribe = vec![format!("{}.>", inbox_prefix(&Principal::Service(ADMIN_WRITER.into())))];
    (publish, subscribe)
}

fn user(out: &mut String, principal: &Principal, publish: &[String], deny: &[String], subscribe: &[String]) {
    let list = |v: &[String]| v.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
    let _ = writeln!(out, "    {{");
    let _ = writeln!(out, "      user: \"{}\"", nats_user(principal));
    let _ = writeln!(out, "      permissions: {{");
    let _ = writeln!(
        out,
        "        publish: {{ allow: [{}], deny: [{}] }}",
        list(publish),
        list(deny)
    );
    let _ = writeln!(out, "        subscribe: {{ allow: [{}] }}", list(subscribe));
    let _ = writeln!(out, "      }}");
    let _ = writeln!(out, "    }}");
}

/// The accounts of nats-server: `HENVIS`, with JetStream, holding every stream and bucket
/// and every henvis service as a user — the router with every right except
/// [`router_denied`] (it is the one component that reads every submission and writes every
/// delivery), the admin service with [`admin_service_permissions`], each sector service
/// with [`sector_permissions`]; nobody with [`denied_to_everyone`] — and `SYS`, the system
/// account, whose one user is the nats-server's own certificate (operators' monitoring
/// from the NATS machines). No other account has users: nobody connects outside these.
/// Administrators have no NATS user.
pub fn nats_authorization(dir: &Directory) -> String {
    let mut out = String::from(
        "# Generated by `henvis nats-auth` from crates/bus/src/names.rs and the agency directory;\n\
         # do not edit (a test checks that this file and the code agree).\n\
         # Users are the certificates' URI SANs, mapped by `verify_and_map` (deploy/nats/tls.conf).\n\
         # Account HENVIS holds every stream and bucket and every henvis service; SYS is the\n\
         # system account, for monitoring with the nats-server's own certificate.\n\
         accounts {\n  HENVIS {\n    jetstream: enabled\n    users = [\n",
    );
    let all = vec![">".to_owned()];
    user(
        &mut out,
        &Principal::Service("router".into()),
        &all,
        &router_denied(),
        &all,
    );
    let (publish, subscribe) = admin_service_permissions();
    user(
        &mut out,
        &Principal::Service(ADMIN_WRITER.into()),
        &publish,
        &denied_to_everyone(),
        &subscribe,
    );
    for sector in Sector::ALL {
        let agencies: Vec<AgencyId> = dir
            .agencies()
            .filter(|a| a.sector == sector)
            .map(|a| a.id.clone())
            .collect();
        let (publish, subscribe) = sector_permissions(sector, &agencies);
        user(
            &mut out,
            &Principal::Service(sector.to_string()),
            &publish,
            &denied_to_everyone(),
            &subscribe,
        );
    }
    out.push_str(
        "    ]\n  }\n  SYS {\n    users = [\n      { user: \"henvis://service/nats\" }\n    ]\n  }\n}\nsystem_account: SYS\n",
    );
    out
}

/// What each principal may do over NATS, as a Markdown table for docs/SECURITY.md (between
/// its `permissions` markers; a test checks that the two agree). A sector service's
/// per-agency rights are shown once, with `<agency>` for each of its agencies.
pub fn permissions_markdown() -> String {
    let mut out = String::from(
        "| principal | may publish (and call the JetStream API on) | may subscribe to |\n| --- | --- | --- |\n",
    );
    let code = |v: &[String]| v.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ");
    let deny = code(&denied_to_everyone());
    out.push_str(&format!(
        "| router | everything except {} | everything |\n",
        code(&router_denied())
    ));
    let (publish, subscribe) = admin_service_permissions();
    out.push_str(&format!(
        "| admin service | {}; never {deny} | {} |\n",
        code(&publish),
        code(&subscribe)
    ));
    out.push_str("| administrator `<id>` | nothing: administrators call the admin service over gRPC | nothing |\n");
    #[allow(clippy::unwrap_used)] // a constant, valid id
    let placeholder = AgencyId::parse("agency-placeholder").unwrap();
    for sector in Sector::ALL {
        let (publish, subscribe) = sector_permissions(sector, std::slice::from_ref(&placeholder));
        let publish: Vec<String> = publish
            .iter()
            .map(|p| p.replace("agency-placeholder", "<agency>"))
            .collect();
        out.push_str(&format!(
            "| {sector} service | {}; never {deny} | {} |\n",
            code(&publish),
            code(&subscribe)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_security_doc_lists_the_permissions_the_code_generates() {
        let doc = include_str!("../../../docs/SECURITY.md");
        let begin = "<!-- permissions:begin (generated: `henvis nats-auth --markdown`) -->\n";
        let start = doc.find(begin).map(|i| i + begin.len()).unwrap();
        let end = doc.find("<!-- permissions:end -->").unwrap();
        assert!(
            doc[start..end] == permissions_markdown(),
            "docs/SECURITY.md's permission table differs from the code: run `henvis nats-auth --markdown`"
        );
    }

    #[test]
    fn the_deploy_configuration_is_what_the_code_generates() {
        let dir = Directory::denmark().unwrap();
        let generated = nats_authorization(&dir);
        let shipped = include_str!("../../../deploy/nats/auth.conf");
        assert!(
            generated == shipped,
            "deploy/nats/auth.conf differs from the code: run `henvis nats-auth > deploy/nats/auth.conf`"
        );
    }

    #[test]
    fn a_sector_may_publish_only_its_own_inbound_subjects() {
        let (publish, _) = sector_permissions(Sector::Health, &[AgencyId::parse("region-hovedstaden").unwrap()]);
        assert!(publish.contains(&"henvis.in.health.>".to_owned()));
        assert!(
            !publish.iter().any(|p| p.contains(".GET.IN")),
            "only the router reads IN"
        );
        let (police, _) = sector_permissions(Sector::Police, &[AgencyId::parse("politi-fyn").unwrap()]);
        assert!(
            !police.iter().any(|p| p.contains(".GET.IN")),
            "only the router reads IN"
        );
        assert!(
            !publish
                .iter()
                .any(|p| p.starts_with("henvis.in.police") || p.starts_with("henvis.out"))
        );
        assert!(
            !publish
                .iter()
                .any(|p| p.contains("STREAM.UPDATE") || p.contains("PURGE") || p.contains("STREAM.DELETE"))
        );
    }
}
