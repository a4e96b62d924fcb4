//! Every subject, stream, consumer and bucket name. deploy/nats/*.conf grants permissions on
//! exactly these; a test checks that they agree.

use henvis_domain::{AgencyId, CaseId, MessageType, Sector};

/// Stream of submitted events: `henvis.in.<sector>.<message_type>.<case id>`.
pub const STREAM_IN: &str = "IN";
/// Stream of deliveries: `henvis.out.<agency>.<message_type>`.
pub const STREAM_OUT: &str = "OUT";
/// Stream of delivery status records: `henvis.status.<sender agency>.<event id>`.
pub const STREAM_STATUS: &str = "STATUS";
/// Stream of audit records: `henvis.audit.<kind>`.
pub const STREAM_AUDIT: &str = "AUDIT";
/// The hash chain over AUDIT: one link per audit record, in AUDIT's order (subject
/// [`CHAIN_SUBJECT`]); appended by the routers only, each link expecting the one before.
pub const STREAM_CHAIN: &str = "AUDIT_CHAIN";
/// The chain stream's subjects.
pub const CHAIN_PREFIX: &str = "henvis.chain";
/// The chain's subject.
pub const CHAIN_SUBJECT: &str = "henvis.chain.link";
/// Signed checkpoints over the chain (subject [`CHECKPOINT_SUBJECT`]).
pub const STREAM_CHECKPOINTS: &str = "AUDIT_CHECKPOINTS";
/// The checkpoint stream's subjects.
pub const CHECKPOINT_PREFIX: &str = "henvis.checkpoint";
/// The checkpoints' subject.
pub const CHECKPOINT_SUBJECT: &str = "henvis.checkpoint.signed";
/// Stream of deliveries no inbox accepted in time: `henvis.dead.<agency>.<message_type>`.
pub const STREAM_DEAD: &str = "DEAD";
/// Subject prefix of dead letters.
pub const DEAD_PREFIX: &str = "henvis.dead";
/// JetStream's advisory when a consumer gave up on a message, for every inbox consumer.
pub const MAX_DELIVERIES_ADVISORY: &str = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.OUT.>";

/// Where a dead delivery to `agency` is kept.
pub fn dead_subject(agency: &AgencyId, mt: &str) -> String {
    format!("{DEAD_PREFIX}.{agency}.{mt}")
}

/// Where the router keeps a stored event it can never route (not written by a sector
/// service), instead of dropping it.
pub fn dead_inbound_subject() -> String {
    format!("{DEAD_PREFIX}.router.inbound")
}

/// Administrator alerts in the audit stream (dead letters, expiring deliveries, full
/// streams), each under its writer: [`ROUTER_WRITER`] or a sector service's sector.
pub fn audit_admin_subject(writer: &str) -> String {
    format!("{AUDIT_PREFIX}.admin.{writer}")
}

/// Every administrator alert, whoever wrote it.
pub fn audit_admin_filter() -> String {
    format!("{AUDIT_PREFIX}.admin.>")
}

/// Stream of per-agency submission units: each agency's share of IN.
pub const STREAM_QUOTA: &str = "QUOTA";

/// Prefix of the quota stream's subjects.
pub const QUOTA_PREFIX: &str = "henvis.quota";

/// Bytes of an event one quota unit covers (an event takes one unit per started unit).
pub const QUOTA_UNIT_BYTES: usize = 16 * 1024;

/// The subject of an agency's quota units.
pub fn quota_subject(agency: &AgencyId) -> String {
    format!("{QUOTA_PREFIX}.{agency}")
}

/// Key-value bucket of case records, keyed by case id.
pub const BUCKET_CASES: &str = "henvis_cases";
/// The router's durable consumer on IN.
pub const ROUTER_CONSUMER: &str = "router";

/// Subject prefix of submitted events.
pub const IN_PREFIX: &str = "henvis.in";
/// Subject prefix of deliveries.
pub const OUT_PREFIX: &str = "henvis.out";
/// Subject prefix of status records.
pub const STATUS_PREFIX: &str = "henvis.status";
/// Subject prefix of audit records.
pub const AUDIT_PREFIX: &str = "henvis.audit";

/// Where a sector service publishes a submitted event about `case`.
pub fn inbound_subject(sector: Sector, mt: &MessageType, case: &CaseId) -> String {
    format!("{IN_PREFIX}.{sector}.{mt}.{case}")
}

/// Every submitted event about `case`, from any sector.
pub fn inbound_case_filter(case: &CaseId) -> String {
    format!("{IN_PREFIX}.*.*.{case}")
}

/// The case of a submitted event, from its subject.
pub fn case_of_inbound_subject(subject: &str) -> Option<CaseId> {
    let rest = subject.strip_prefix(IN_PREFIX)?.strip_prefix('.')?;
    let mut tokens = rest.split('.');
    let (_sector, _mt, case) = (tokens.next()?, tokens.next()?, tokens.next()?);
    if tokens.next().is_some() {
        return None;
    }
    CaseId::parse(case).ok()
}

/// Whether an inbound subject is the one a sector service of `sector` would have used for
/// an event of type `mt` about `case`.
pub fn inbound_subject_matches(subject: &str, sector: Sector, mt: &MessageType, case: &CaseId) -> bool {
    subject == inbound_subject(sector, mt, case)
}

/// The reply-subject prefix of a principal's NATS connection: it may subscribe to its own
/// replies only (`_INBOX_service_police.>`), never to another's.
pub fn inbox_prefix(principal: &henvis_domain::Principal) -> String {
    let uri = principal.uri();
    let rest = uri.strip_prefix(henvis_domain::PRINCIPAL_SCHEME).unwrap_or(&uri);
    format!("_INBOX_{}", rest.replace('/', "_"))
}

/// A fresh name for a short-lived reading consumer. Named consumers carry their filter in
/// the API subject (`$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`), which is what
/// NATS permissions can restrict.
pub fn reader_name() -> String {
    format!("read-{}", uuid::Uuid::new_v4().simple())
}

/// Key-value bucket of the routing order: case id → the IN sequence up to which every
/// event of the case has been routed.
pub const BUCKET_ORDER: &str = "henvis_order";

/// Where the router publishes a delivery to `agency`.
pub fn outbound_subject(agency: &AgencyId, mt: &MessageType) -> String {
    format!("{OUT_PREFIX}.{agency}.{mt}")
}

/// The recipient and message type of a delivery, from its subject.
pub fn outbound_parts(subject: &str) -> Option<(&str, &str)> {
    let rest = subject.strip_prefix(OUT_PREFIX)?.strip_prefix('.')?;
    let (recipient, mt) = rest.split_once('.')?;
    (!mt.contains('.')).then_some((recipient, mt))
}

/// Every delivery to `agency`.
pub fn outbound_filter(agency: &AgencyId) -> String {
    format!("{OUT_PREFIX}.{agency}.>")
}

/// The durable inbox consumer of `agency` on OUT.
pub fn inbox_consumer(agency: &AgencyId) -> String {
    format!("inbox-{agency}")
}

/// The writer token of status records the router writes.
pub const ROUTER_WRITER: &str = "router";

/// A status record of one event, kept under its sender, with its writer as the last token:
/// [`ROUTER_WRITER`], the sender itself (its Submit), or the recipient that received it.
/// NATS permissions let a sector service write only under its own agencies' tokens.
pub fn status_subject(sender: &AgencyId, event_id: &str, writer: &str) -> String {
    format!("{STATUS_PREFIX}.{sender}.{event_id}.{writer}")
}

/// Every status record of one event.
pub fn status_filter(sender: &AgencyId, event_id: &str) -> String {
    format!("{STATUS_PREFIX}.{sender}.{event_id}.*")
}

/// The writer of a status record, from its subject.
pub fn status_writer(subject: &str) -> Option<&str> {
    let rest = subject.strip_prefix(STATUS_PREFIX)?.strip_prefix('.')?;
    let mut tokens = rest.split('.');
    let (_sender, _event, writer) = (tokens.next()?, tokens.next()?, tokens.next()?);
    tokens.next().is_none().then_some(writer)
}

/// Whether a status record's writer may speak for `recipient`: the router for anyone, any
/// other writer only for itself (an agency records that *it* received something).
pub fn status_writer_may_speak_for(writer: &str, recipient: &str) -> bool {
    writer == ROUTER_WRITER || writer == recipient
}

/// Routing decisions about one case in the audit stream (written by the router only).
pub fn audit_decision_subject(case: &CaseId) -> String {
    format!("{AUDIT_PREFIX}.decision.{case}.{ROUTER_WRITER}")
}

/// Every routing decision in the audit stream.
pub fn audit_decisions_filter() -> String {
    format!("{AUDIT_PREFIX}.decision.>")
}

/// What happened to one case in the audit stream, under its writer: changes of the case
/// record (guardian, consent, never-disclose, return) by [`ROUTER_WRITER`], the steps a
/// police district took on the case's alerts by that district's agency id.
pub fn audit_case_subject(case: &CaseId, writer: &str) -> String {
    format!("{AUDIT_PREFIX}.case.{case}.{writer}")
}

/// Every case's audit records written by `writer`: what a police district may append.
pub fn audit_case_subject_pattern(writer: &AgencyId) -> String {
    format!("{AUDIT_PREFIX}.case.*.{writer}")
}

/// Everything audited about one case, whoever wrote it.
pub fn audit_case_filter(case: &CaseId) -> String {
    format!("{AUDIT_PREFIX}.*.{case}.*")
}

/// Rule set changes in the audit stream.
pub fn audit_rules_subject() -> String {
    format!("{AUDIT_PREFIX}.rules")
}

/// Prefix of the requests the router answers for sector services.
pub const QUERY_PREFIX: &str = "henvis.query";

/// The kinds of requests the router answers for sector services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    /// A case's routing decisions.
    Decisions,
    /// A case's subject access report.
    Report,
    /// The proposed links of the asker's cases.
    Links,
    /// An answer to a proposed link.
    LinkAnswer,
    /// The cases the asker is guardian of.
    Cases,
}

impl QueryKind {
    /// Every kind.
    pub const ALL: [QueryKind; 5] = [
        QueryKind::Decisions,
        QueryKind::Report,
        QueryKind::Links,
        QueryKind::LinkAnswer,
        QueryKind::Cases,
    ];

    /// Its name in subjects.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decisions => "decisions",
            Self::Report => "report",
            Self::Links => "links",
            Self::LinkAnswer => "link_answer",
            Self::Cases => "cases",
        }
    }
}

/// A `kind` request on behalf of `agency` (the subject names the asker, and NATS
/// permissions let a sector service ask only as its own agencies).
pub fn query_subject(kind: QueryKind, agency: &AgencyId) -> String {
    format!("{QUERY_PREFIX}.{}.{agency}", kind.as_str())
}

/// Every `kind` request (the router's subscription).
pub fn query_filter(kind: QueryKind) -> String {
    format!("{QUERY_PREFIX}.{}.*", kind.as_str())
}

/// The agency a `kind` request is made for, from its subject.
pub fn query_asker(kind: QueryKind, subject: &str) -> Option<AgencyId> {
    let rest = subject
        .strip_prefix(QUERY_PREFIX)?
        .strip_prefix('.')?
        .strip_prefix(kind.as_str())?
        .strip_prefix('.')?;
    AgencyId::parse(rest).ok()
}

/// Key-value bucket of idempotency keys: `<agency>.<sha256 of the key>` → the event.
pub const BUCKET_IDEMPOTENCY: &str = "henvis_idempotency";

/// The key of an idempotency record: `<agency>.<sha256 of the key, hex>`.
pub fn idempotency_record_key(agency: &str, key: &str) -> String {
    use sha2::Digest as _;
    format!("{agency}.{}", hex::encode(sha2::Sha256::digest(key.as_bytes())))
}

/// The key of the record that `agency` opened `case` (kept with its idempotency records:
/// only its own sector service reads or writes it), `<agency>.opened.<case>`.
pub fn opening_record_key(agency: &str, case: &CaseId) -> String {
    format!("{agency}.opened.{case}")
}

/// Key-value bucket of delivery marks, keyed `<recipient>.<event id>`.
pub const BUCKET_DELIVERED: &str = "henvis_delivered";

/// The key of a delivery mark.
pub fn delivered_key(recipient: &str, event_id: &str) -> String {
    format!("{recipient}.{event_id}")
}

/// Key-value bucket of police case alerts, keyed `<district>.<alert id>`.
pub const BUCKET_ALERTS: &str = "henvis_alerts";

/// Key-value bucket of the alerted events, redacted by the router to the classes it granted
/// the district, keyed like the alerts (`<district>.<alert id>`); read by the police
/// service when a contact person fetches an alert's details.
pub const BUCKET_ALERT_DETAILS: &str = "henvis_alert_details";

/// Key-value bucket holding the active rule set (key [`RULES_KEY`]).
pub const BUCKET_RULES: &str = "henvis_rules";
/// The key of the active rule set in [`BUCKET_RULES`].
pub const RULES_KEY: &str = "active";

/// Key-value bucket of rule-set governance: every proposal (`proposal.<n>`) with its text,
/// tests and decision. Written by the admin service only.
pub const BUCKET_GOVERNANCE: &str = "henvis_governance";
/// The key of proposal `n` in [`BUCKET_GOVERNANCE`].
pub fn proposal_key(n: u64) -> String {
    format!("proposal.{n:08}")
}

/// Key-value bucket of the approved directory changes ([`DIRECTORY_KEY`]), written by the
/// admin service, watched by every service.
pub const BUCKET_DIRECTORY: &str = "henvis_directory";
/// The key of the approved directory changes in [`BUCKET_DIRECTORY`].
pub const DIRECTORY_KEY: &str = "amendments";
/// The key of directory proposal `n` in [`BUCKET_GOVERNANCE`].
pub fn directory_proposal_key(n: u64) -> String {
    format!("directory.{n:08}")
}

/// Key-value bucket of alarms that cannot live in the audit because they are about the
/// audit: `audit_unwritable.<service>` while that service cannot write its audit records.
pub const BUCKET_ALARMS: &str = "henvis_alarms";
/// The key of `service`'s alarm that it cannot write the audit.
pub fn audit_alarm_key(service: &str) -> String {
    format!("audit_unwritable.{service}")
}

/// Where a PKI folder keeps the case master key by default (relative to the folder).
pub const CASE_MASTER_KEY_FILE: &str = "service/case-master.key";

/// Key-value bucket of per-case data keys, wrapped with the master key, keyed by case id;
/// an erased case keeps a tombstone (keys.rs).
pub const BUCKET_CASE_KEYS: &str = "henvis_case_keys";

/// Key-value bucket of linkage tokens and proposed links (the router's only):
/// `token.<hex>` → the cases whose reports gave the token, `case.<case>` → the case's
/// tokens (so they go with it), `link.<id>` → a proposed link and its answers.
pub const BUCKET_LINKAGE: &str = "henvis_linkage";

/// Every key-value bucket of the topology (each service may create them where missing).
pub const BUCKETS: [&str; 12] = [
    BUCKET_CASE_KEYS,
    BUCKET_LINKAGE,
    BUCKET_ALARMS,
    BUCKET_DIRECTORY,
    BUCKET_CASES,
    BUCKET_RULES,
    BUCKET_GOVERNANCE,
    BUCKET_ALERTS,
    BUCKET_ALERT_DETAILS,
    BUCKET_IDEMPOTENCY,
    BUCKET_ORDER,
    BUCKET_DELIVERED,
];

/// Every stream of the topology.
pub const STREAMS: [&str; 8] = [
    STREAM_IN,
    STREAM_OUT,
    STREAM_STATUS,
    STREAM_AUDIT,
    STREAM_CHAIN,
    STREAM_CHECKPOINTS,
    STREAM_DEAD,
    STREAM_QUOTA,
];

/// The writer name of the admin service in the audit.
pub const ADMIN_WRITER: &str = "admin";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_built_from_safe_tokens() {
        let a = AgencyId::parse("kommune-101").unwrap();
        let mt = MessageType::parse("child_missing").unwrap();
        let case = CaseId::parse("0196f3a0-7b5c-7cc0-8000-000000000001").unwrap();
        let subject = inbound_subject(Sector::Ngo, &mt, &case);
        assert_eq!(
            subject,
            "henvis.in.ngo.child_missing.0196f3a0-7b5c-7cc0-8000-000000000001"
        );
        assert_eq!(case_of_inbound_subject(&subject), Some(case));
        assert_eq!(case_of_inbound_subject("henvis.in.ngo.child_missing"), None);
        assert_eq!(
            inbound_case_filter(&case),
            "henvis.in.*.*.0196f3a0-7b5c-7cc0-8000-000000000001"
        );
        assert_eq!(outbound_subject(&a, &mt), "henvis.out.kommune-101.child_missing");
        assert_eq!(outbound_filter(&a), "henvis.out.kommune-101.>");
    }
}
