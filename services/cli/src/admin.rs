//! `henvis admin …`: the administrators' commands, all through the admin service over
//! mutual TLS with the administrator's own certificate. Tables for people, `--json` for
//! scripts; exit status 0 done, 1 refused (the reason is printed), 2 usage.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use henvis_domain::Principal;
use henvis_proto::henvis::admin::v1::{
    AdminAlertsRequest, ApproveRuleSetRequest, BreakGlassRequest, CaseAuditRequest, DiffRuleSetsRequest,
    GetRuleSetRequest, ListRuleSetsRequest, ProposeRollbackRequest, ProposeRuleSetRequest, RejectRuleSetRequest,
    ReviewBreakGlassRequest, RuleSetRef, RuleSetState, RuleSetVersion, SimulateRequest, SubjectAccessReportRequest,
    WhatIfRequest, WhoAmIRequest, admin_service_client::AdminServiceClient, rule_set_ref,
};
use tonic::Request;

/// How to reach the admin service, and as whom.
#[derive(clap::Args)]
pub struct AdminConn {
    /// The admin service's address (host:port).
    #[arg(
        long,
        env = "HENVIS_ADMIN_ENDPOINT",
        default_value = "127.0.0.1:50055",
        global = true
    )]
    endpoint: String,
    /// The PKI folder holding the CA and the administrator's certificate and key.
    #[arg(long, env = "HENVIS_PKI_DIR", default_value = ".local/pki", global = true)]
    pki_dir: PathBuf,
    /// The administrator, e.g. `henvis://admin/admin-1`.
    #[arg(long = "as", env = "HENVIS_AS", global = true)]
    principal: Option<String>,
    /// Print JSON (one object per answer) instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

/// The administrators' actions.
#[derive(Subcommand)]
pub enum AdminAction {
    /// Who you are to the admin service, and what waits for you.
    Whoami,
    /// Proposes a rule file: validated against the deployment's directory, its tests run.
    Propose {
        /// The rule file.
        file: PathBuf,
        /// Why (no personal data).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Approves another administrator's proposal; it goes live within seconds.
    Approve {
        /// The proposal number.
        proposal: u64,
    },
    /// Rejects a proposal.
    Reject {
        /// The proposal number.
        proposal: u64,
        /// Why (mandatory).
        #[arg(long)]
        reason: String,
    },
    /// Emergency: puts a proposal live alone. Raises an administrator alert; another
    /// administrator must review it afterwards.
    BreakGlass {
        /// The proposal number.
        proposal: u64,
        /// Why this cannot wait for a second administrator (mandatory).
        #[arg(long)]
        reason: String,
    },
    /// Reviews another administrator's break-glass approval.
    Review {
        /// The proposal number.
        proposal: u64,
        /// What you found (mandatory).
        #[arg(long)]
        note: String,
    },
    /// Proposes to restore an earlier approved rule set (approved like any proposal).
    Rollback {
        /// The earlier approved proposal.
        proposal: u64,
        /// Why.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Every proposal with its state, newest first.
    List,
    /// One proposal (or the live set), with `--text` its rule file.
    Show {
        /// The proposal number; the live set when absent.
        proposal: Option<u64>,
        /// Print the rule file too.
        #[arg(long)]
        text: bool,
    },
    /// What changes between two rule sets, in effect.
    Diff {
        /// `live`, a proposal number or a rule file.
        #[arg(long, default_value = "live")]
        from: String,
        /// `live`, a proposal number or a rule file.
        to: String,
    },
    /// What the router would do with one event.
    Simulate {
        /// The sending agency.
        #[arg(long)]
        sender: String,
        /// The event as JSON (the JSON form of henvis.events.v1.Event).
        #[arg(long)]
        event: PathBuf,
        /// An existing case (its record as it stands now).
        #[arg(long)]
        case_id: Option<String>,
        /// A case record as JSON instead.
        #[arg(long)]
        case_json: Option<PathBuf>,
        /// For a referral response: the referral's sender.
        #[arg(long)]
        referral_sender: Option<String>,
        /// `live`, a proposal number or a rule file.
        #[arg(long, default_value = "live")]
        rules: String,
    },
    /// Replays recent decisions on a candidate and the live set: what it gains and loses.
    WhatIf {
        /// A proposal number or a rule file.
        candidate: String,
        /// How many days back.
        #[arg(long, default_value_t = 7)]
        days: u32,
        /// At most this many itemised deliveries of each kind.
        #[arg(long, default_value_t = 50)]
        max_items: u32,
    },
    /// Directory changes (agencies, contact persons, administrators), under four eyes:
    /// each change is proposed here and applies when another administrator approves it.
    Directory {
        #[command(subcommand)]
        action: DirectoryAction,
    },
    /// The nats-server `authorization` block for the directory in force (after an agency
    /// was added: write it to auth.conf, then `nats-server --signal reload`).
    NatsAuth,
    /// Every audit record of one case, oldest first.
    Audit {
        /// The case id.
        case_id: String,
    },
    /// The subject access report on a case, every entry (those a police deferral keeps
    /// from the guardian marked); giving it is audited.
    Report {
        /// The case id.
        case_id: String,
        #[command(flatten)]
        out: crate::report::ReportOut,
    },
    /// Administrator alerts and the dead letters (ids only).
    Alerts,
    /// Erasing a case (its key destroyed: nothing the broker holds of it can be read
    /// again), under four eyes: proposed here, carried out when another administrator
    /// approves.
    Erasure {
        #[command(subcommand)]
        action: ErasureAction,
    },
}

/// Case erasures and their approval.
#[derive(Subcommand)]
pub enum ErasureAction {
    /// Proposes erasing a case.
    Propose {
        /// The case id.
        case_id: String,
        /// Why (mandatory): a legal ground or a request, never the child's data.
        #[arg(long)]
        reason: String,
        /// While the police hold the case under investigation: why the hold is overridden.
        #[arg(long)]
        police_hold_override: Option<String>,
    },
    /// Approves an erasure another administrator proposed; the case is erased at once.
    Approve {
        /// The erasure number.
        erasure: u64,
    },
    /// Rejects an erasure.
    Reject {
        /// The erasure number.
        erasure: u64,
        /// Why (mandatory).
        #[arg(long)]
        reason: String,
    },
    /// Every erasure, newest first.
    List,
}

async fn erasure(
    c: &mut AdminServiceClient<tonic::transport::Channel>,
    action: ErasureAction,
    json_out: bool,
) -> anyhow::Result<()> {
    use henvis_proto::henvis::admin::v1::{
        ApproveCaseErasureRequest, CaseErasure, ListCaseErasuresRequest, ProposeCaseErasureRequest,
        RejectCaseErasureRequest,
    };
    let print = |e: &CaseErasure| -> anyhow::Result<()> {
        if json_out {
            println!("{}", json(e, "henvis.admin.v1.CaseErasure")?);
        } else {
            println!(
                "erasure #{} of case {} ({}) proposed by {} at {}: {}",
                e.erasure_id,
                e.case_id,
                match RuleSetState::try_from(e.state) {
                    Ok(RuleSetState::Live) => "erased",
                    _ => state_name(e.state),
                },
                e.proposed_by,
                when(e.proposed_at),
                e.reason
            );
            if !e.police_hold_override.is_empty() {
                println!("  police hold overridden: {}", e.police_hold_override);
            }
            if !e.approved_by.is_empty() {
                println!("  approved by {} at {}", e.approved_by, when(e.approved_at));
            }
            if !e.rejected_by.is_empty() {
                println!("  rejected by {}: {}", e.rejected_by, e.rejection_reason);
            }
            println!("  {}", e.statement);
        }
        Ok(())
    };
    match action {
        ErasureAction::Propose {
            case_id,
            reason,
            police_hold_override,
        } => print(
            &c.propose_case_erasure(ProposeCaseErasureRequest {
                case_id,
                reason,
                police_hold_override: police_hold_override.unwrap_or_default(),
            })
            .await?
            .into_inner(),
        ),
        ErasureAction::Approve { erasure } => print(
            &c.approve_case_erasure(ApproveCaseErasureRequest { erasure_id: erasure })
                .await?
                .into_inner(),
        ),
        ErasureAction::Reject { erasure, reason } => print(
            &c.reject_case_erasure(RejectCaseErasureRequest {
                erasure_id: erasure,
                reason,
            })
            .await?
            .into_inner(),
        ),
        ErasureAction::List => {
            let r = c.list_case_erasures(ListCaseErasuresRequest {}).await?.into_inner();
            if json_out {
                println!("{}", json(&r, "henvis.admin.v1.ListCaseErasuresResponse")?);
            } else {
                for e in &r.erasures {
                    print(e)?;
                }
            }
            Ok(())
        }
    }
}

/// Directory changes and their approval.
#[derive(Subcommand)]
pub enum DirectoryAction {
    /// Proposes a new agency.
    AddAgency {
        /// Its id, e.g. `ngo-example`.
        id: String,
        /// Its public name.
        #[arg(long)]
        name: String,
        /// `police`, `health`, `social` or `ngo`.
        #[arg(long)]
        sector: String,
        /// Why.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Proposes disabling an agency (its certificate refused, nothing delivered to it).
    DisableAgency {
        /// The agency.
        id: String,
        /// Why.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Proposes admitting a disabled agency again.
    EnableAgency {
        /// The agency.
        id: String,
        /// Why.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Proposes a new police contact person.
    AddContactPerson {
        /// The person id, e.g. `politi-fyn-kp7`.
        id: String,
        /// The police agency.
        #[arg(long)]
        agency: String,
        /// Why.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Proposes moving a contact person to another police agency.
    AssignContactPerson {
        /// The person id.
        id: String,
        /// The police agency.
        #[arg(long)]
        agency: String,
        /// Why.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Proposes disabling a contact person or administrator.
    DisablePerson {
        /// The person id.
        id: String,
        /// Why.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Proposes admitting a disabled person again.
    EnablePerson {
        /// The person id.
        id: String,
        /// Why.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Proposes a new administrator.
    AddAdministrator {
        /// The person id.
        id: String,
        /// Why.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Approves another administrator's directory proposal; every service applies it.
    Approve {
        /// The directory proposal number.
        proposal: u64,
    },
    /// Rejects a directory proposal.
    Reject {
        /// The directory proposal number.
        proposal: u64,
        /// Why (mandatory).
        #[arg(long)]
        reason: String,
    },
    /// Every directory proposal, newest first.
    List,
}

async fn directory(
    c: &mut AdminServiceClient<tonic::transport::Channel>,
    action: DirectoryAction,
    json_out: bool,
) -> anyhow::Result<()> {
    use henvis_proto::henvis::admin::v1::{
        ApproveDirectoryChangeRequest, DirectoryChange, DirectoryChangeProposal, ListDirectoryChangesRequest,
        NewAgency, PersonOfAgency, ProposeDirectoryChangeRequest, RejectDirectoryChangeRequest,
        directory_change::Change,
    };
    let print = |p: &DirectoryChangeProposal| -> anyhow::Result<()> {
        if json_out {
            println!("{}", json(p, "henvis.admin.v1.DirectoryChangeProposal")?);
        } else {
            println!(
                "directory change #{} ({}) proposed by {} at {}{}{}",
                p.proposal_id,
                state_name(p.state),
                p.proposed_by,
                when(p.proposed_at),
                if p.approved_by.is_empty() {
                    String::new()
                } else {
                    format!(", approved by {}", p.approved_by)
                },
                if p.rejected_by.is_empty() {
                    String::new()
                } else {
                    format!(", rejected by {}: {}", p.rejected_by, p.rejection_reason)
                }
            );
            for ch in &p.changes {
                println!("  {ch}");
            }
        }
        Ok(())
    };
    let (change, note) = match action {
        DirectoryAction::Approve { proposal } => {
            let p = c
                .approve_directory_change(ApproveDirectoryChangeRequest { proposal_id: proposal })
                .await?
                .into_inner();
            print(&p)?;
            if !json_out {
                println!("next: every service applies it within seconds");
            }
            return Ok(());
        }
        DirectoryAction::Reject { proposal, reason } => {
            let p = c
                .reject_directory_change(RejectDirectoryChangeRequest {
                    proposal_id: proposal,
                    reason,
                })
                .await?
                .into_inner();
            return print(&p);
        }
        DirectoryAction::List => {
            let r = c
                .list_directory_changes(ListDirectoryChangesRequest {})
                .await?
                .into_inner();
            if json_out {
                println!("{}", json(&r, "henvis.admin.v1.ListDirectoryChangesResponse")?);
            } else {
                for p in &r.proposals {
                    print(p)?;
                }
            }
            return Ok(());
        }
        DirectoryAction::AddAgency { id, name, sector, note } => (
            Change::AddAgency(NewAgency {
                agency_id: id,
                name,
                sector,
            }),
            note,
        ),
        DirectoryAction::DisableAgency { id, note } => (Change::DisableAgency(id), note),
        DirectoryAction::EnableAgency { id, note } => (Change::EnableAgency(id), note),
        DirectoryAction::AddContactPerson { id, agency, note } => (
            Change::AddContactPerson(PersonOfAgency {
                person_id: id,
                agency_id: agency,
            }),
            note,
        ),
        DirectoryAction::AssignContactPerson { id, agency, note } => (
            Change::AssignContactPerson(PersonOfAgency {
                person_id: id,
                agency_id: agency,
            }),
            note,
        ),
        DirectoryAction::DisablePerson { id, note } => (Change::DisablePerson(id), note),
        DirectoryAction::EnablePerson { id, note } => (Change::EnablePerson(id), note),
        DirectoryAction::AddAdministrator { id, note } => (Change::AddAdministrator(id), note),
    };
    let p = c
        .propose_directory_change(ProposeDirectoryChangeRequest {
            changes: vec![DirectoryChange { change: Some(change) }],
            note,
        })
        .await?
        .into_inner();
    print(&p)?;
    if !json_out {
        println!(
            "next: another administrator approves it with `henvis admin directory approve {}`",
            p.proposal_id
        );
    }
    Ok(())
}

/// A rule-set reference from the command line: `live`, a number, or a file.
fn rule_ref(s: &str) -> anyhow::Result<RuleSetRef> {
    let r = if s == "live" {
        rule_set_ref::Ref::Live(true)
    } else if let Ok(n) = s.parse::<u64>() {
        rule_set_ref::Ref::ProposalId(n)
    } else {
        rule_set_ref::Ref::Text(read(Path::new(s))?)
    };
    Ok(RuleSetRef { r#ref: Some(r) })
}

fn read(p: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(p).with_context(|| format!("reading `{}`", p.display()))
}

/// A wire message as JSON (its proto3 JSON form).
fn json<M: prost::Message>(m: &M, full_name: &str) -> anyhow::Result<String> {
    let pool = prost_reflect::DescriptorPool::decode(henvis_proto::FILE_DESCRIPTOR_SET)?;
    let desc = pool
        .get_message_by_name(full_name)
        .with_context(|| format!("no message `{full_name}`"))?;
    let dynamic = prost_reflect::DynamicMessage::decode(desc, m.encode_to_vec().as_slice())?;
    Ok(serde_json::to_string_pretty(&dynamic)?)
}

fn state_name(s: i32) -> &'static str {
    match RuleSetState::try_from(s) {
        Ok(RuleSetState::Proposed) => "proposed",
        Ok(RuleSetState::Live) => "LIVE",
        Ok(RuleSetState::Superseded) => "superseded",
        Ok(RuleSetState::Rejected) => "rejected",
        _ => "?",
    }
}

fn when(t: Option<prost_types::Timestamp>) -> String {
    t.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.seconds).ok())
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "-".into())
}

fn describe(v: &RuleSetVersion) -> String {
    let mut out = format!(
        "#{} {} ({})  sha256 {}…\n  proposed by {} at {}, {} tests passed{}",
        v.proposal_id,
        v.rule_set_version,
        state_name(v.state),
        v.sha256.get(..12).unwrap_or(&v.sha256),
        v.proposed_by,
        when(v.proposed_at),
        v.tests_passed,
        if v.rollback_of > 0 {
            format!(", restores #{}", v.rollback_of)
        } else {
            String::new()
        }
    );
    if !v.note.is_empty() {
        out.push_str(&format!("\n  note: {}", v.note));
    }
    if !v.approved_by.is_empty() {
        out.push_str(&format!("\n  approved by {} at {}", v.approved_by, when(v.approved_at)));
    }
    if let Some(g) = &v.break_glass {
        out.push_str(&format!("\n  BREAK-GLASS: {}", g.reason));
        if g.reviewed {
            out.push_str(&format!(
                "\n  reviewed by {} at {}: {}",
                g.reviewed_by,
                when(g.reviewed_at),
                g.review_note
            ));
        } else {
            out.push_str(&format!(
                "\n  UNREVIEWED: another administrator must run `henvis admin review {} --note …`",
                v.proposal_id
            ));
        }
    }
    if !v.rejected_by.is_empty() {
        out.push_str(&format!(
            "\n  rejected by {} at {}: {}",
            v.rejected_by,
            when(v.rejected_at),
            v.rejection_reason
        ));
    }
    out
}

/// The audit's own commands.
#[derive(Subcommand)]
pub enum AuditAction {
    /// Verifies the whole audit: records against the hash chain, the chain link by link,
    /// the signed checkpoints. Exit status 1 when anything is broken.
    Verify {
        /// A checkpoint kept off the system earlier (`--save-checkpoint`): the audit must
        /// extend it. Repeatable.
        #[arg(long = "checkpoint")]
        checkpoints: Vec<PathBuf>,
        /// Where to keep the newest checkpoint (copy it off the system).
        #[arg(long)]
        save_checkpoint: Option<PathBuf>,
        /// Also check that the audit accounts for every stored delivery.
        #[arg(long)]
        completeness: bool,
    },
}

impl AdminConn {
    async fn client(&self) -> anyhow::Result<AdminServiceClient<tonic::transport::Channel>> {
        let uri = self
            .principal
            .as_deref()
            .context("say which administrator you are with `--as henvis://admin/<id>` (or HENVIS_AS)")?;
        let principal = Principal::from_uri(uri)?;
        let addr = self
            .endpoint
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        Ok(AdminServiceClient::new(
            henvis_runtime::tls::connect_as(addr, &self.pki_dir, &principal).await?,
        ))
    }
}

/// Runs `henvis audit …`.
pub async fn audit(conn: AdminConn, action: AuditAction) -> anyhow::Result<()> {
    let AuditAction::Verify {
        checkpoints,
        save_checkpoint,
        completeness,
    } = action;
    let trusted = checkpoints
        .iter()
        .map(|p| read(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let r = conn
        .client()
        .await?
        .verify_audit(Request::new(henvis_proto::henvis::admin::v1::VerifyAuditRequest {
            trusted_checkpoints: trusted,
            completeness,
        }))
        .await?
        .into_inner();
    if conn.json {
        println!("{}", json(&r, "henvis.admin.v1.VerifyAuditResponse")?);
    } else {
        println!("{}", r.finding);
        if !r.intact && r.break_audit_seq > 0 {
            println!(
                "first break: audit record {} stored at {}",
                r.break_audit_seq,
                when(r.break_at)
            );
        }
        if let Some(c) = &r.completeness {
            println!(
                "completeness: {} events decided, {} deliveries stored; {} decided recipients without their delivery, {} deliveries without a decision naming them, {} events with more than one standing decision; {} alert steps (claims, hand-overs, detail reads), {} without their audit record; {} administrators' steps (proposals, decisions, reviews), {} without their audit record",
                c.events_decided,
                c.deliveries,
                c.without_outcome,
                c.without_decision,
                c.decided_more_than_once,
                c.alert_steps,
                c.alert_steps_without_record,
                c.governance_steps,
                c.governance_steps_without_record
            );
        }
    }
    let complete = r.completeness.as_ref().is_none_or(|c| {
        c.without_outcome == 0
            && c.without_decision == 0
            && c.alert_steps_without_record == 0
            && c.governance_steps_without_record == 0
    });
    if let Some(p) = save_checkpoint {
        std::fs::write(&p, &r.latest_checkpoint).with_context(|| format!("writing `{}`", p.display()))?;
        if !conn.json {
            println!("newest checkpoint kept in `{}`: copy it off the system", p.display());
        }
    }
    anyhow::ensure!(r.intact, "the audit is not intact");
    anyhow::ensure!(complete, "the audit does not account for every delivery");
    Ok(())
}

/// Runs one administrator action.
pub async fn run(conn: AdminConn, action: AdminAction) -> anyhow::Result<()> {
    let mut c = conn.client().await?;
    let j = conn.json;
    const V: &str = "henvis.admin.v1.RuleSetVersion";
    let print_version = |v: &RuleSetVersion, next: &str| -> anyhow::Result<()> {
        if j {
            println!("{}", json(v, V)?);
        } else {
            println!("{}", describe(v));
            if !next.is_empty() {
                println!("next: {next}");
            }
        }
        Ok(())
    };
    match action {
        AdminAction::Whoami => {
            let r = c.who_am_i(Request::new(WhoAmIRequest {})).await?.into_inner();
            if j {
                println!("{}", json(&r, "henvis.admin.v1.WhoAmIResponse")?);
            } else {
                println!(
                    "{} — administrator `{}`; {} proposal(s) waiting, {} break-glass approval(s) unreviewed",
                    r.principal, r.admin_id, r.pending_proposals, r.unreviewed_break_glass
                );
            }
        }
        AdminAction::Propose { file, note } => {
            let req = ProposeRuleSetRequest {
                file: file.display().to_string(),
                text: read(&file)?,
                note,
            };
            let v = c.propose_rule_set(Request::new(req)).await?.into_inner();
            print_version(
                &v,
                &format!(
                    "compare it with `henvis admin diff {0}` and `henvis admin what-if {0}`; another administrator approves it with `henvis admin approve {0}`",
                    v.proposal_id
                ),
            )?;
        }
        AdminAction::Approve { proposal } => {
            let v = c
                .approve_rule_set(Request::new(ApproveRuleSetRequest { proposal_id: proposal }))
                .await?
                .into_inner();
            print_version(&v, "every router takes it within seconds; decisions name its version")?;
        }
        AdminAction::Reject { proposal, reason } => {
            let v = c
                .reject_rule_set(Request::new(RejectRuleSetRequest {
                    proposal_id: proposal,
                    reason,
                }))
                .await?
                .into_inner();
            print_version(&v, "")?;
        }
        AdminAction::BreakGlass { proposal, reason } => {
            let v = c
                .break_glass(Request::new(BreakGlassRequest {
                    proposal_id: proposal,
                    reason,
                }))
                .await?
                .into_inner();
            print_version(
                &v,
                &format!(
                    "administrators are alerted; another administrator must run `henvis admin review {proposal} --note …`"
                ),
            )?;
        }
        AdminAction::Review { proposal, note } => {
            let v = c
                .review_break_glass(Request::new(ReviewBreakGlassRequest {
                    proposal_id: proposal,
                    note,
                }))
                .await?
                .into_inner();
            print_version(&v, "")?;
        }
        AdminAction::Rollback { proposal, note } => {
            let v = c
                .propose_rollback(Request::new(ProposeRollbackRequest {
                    proposal_id: proposal,
                    note,
                }))
                .await?
                .into_inner();
            print_version(
                &v,
                &format!(
                    "another administrator approves the rollback with `henvis admin approve {}`",
                    v.proposal_id
                ),
            )?;
        }
        AdminAction::List => {
            let r = c
                .list_rule_sets(Request::new(ListRuleSetsRequest {}))
                .await?
                .into_inner();
            if j {
                println!("{}", json(&r, "henvis.admin.v1.ListRuleSetsResponse")?);
            } else {
                println!(
                    "live: {}{}",
                    r.live_rule_set_version,
                    if r.live_proposal_id == 0 {
                        " (shipped; never approved through governance)".to_owned()
                    } else {
                        format!(" (#{})", r.live_proposal_id)
                    }
                );
                println!(
                    "{:>5}  {:<11} {:<24} {:<14} {:<14} note",
                    "#", "state", "version", "proposed by", "approved by"
                );
                for v in &r.versions {
                    let flag = match &v.break_glass {
                        Some(g) if !g.reviewed => " [break-glass, UNREVIEWED]",
                        Some(_) => " [break-glass, reviewed]",
                        None => "",
                    };
                    println!(
                        "{:>5}  {:<11} {:<24} {:<14} {:<14} {}{flag}",
                        v.proposal_id,
                        state_name(v.state),
                        v.rule_set_version,
                        v.proposed_by,
                        if v.approved_by.is_empty() { "-" } else { &v.approved_by },
                        v.note
                    );
                }
            }
        }
        AdminAction::Show { proposal, text } => {
            let v = c
                .get_rule_set(Request::new(GetRuleSetRequest {
                    proposal_id: proposal.unwrap_or(0),
                }))
                .await?
                .into_inner();
            if j {
                println!("{}", json(&v, V)?);
            } else {
                println!("{}", describe(&v));
                if text {
                    println!("--- {} ---\n{}", v.file, v.text);
                }
            }
        }
        AdminAction::Diff { from, to } => {
            let r = c
                .diff_rule_sets(Request::new(DiffRuleSetsRequest {
                    from: Some(rule_ref(&from)?),
                    to: Some(rule_ref(&to)?),
                }))
                .await?
                .into_inner();
            if j {
                println!("{}", json(&r, "henvis.admin.v1.DiffRuleSetsResponse")?);
            } else {
                println!("{} → {}: {} change(s)", r.from_version, r.to_version, r.changes.len());
                for ch in &r.changes {
                    println!(
                        "  {:<28} {:<20} {:<32} {:<18} {} → {}",
                        ch.message_type,
                        ch.change,
                        if ch.recipient.is_empty() {
                            "(senders)"
                        } else {
                            &ch.recipient
                        },
                        ch.rule_id,
                        ch.before,
                        ch.after
                    );
                }
            }
        }
        AdminAction::Simulate {
            sender,
            event,
            case_id,
            case_json,
            referral_sender,
            rules,
        } => {
            let req = SimulateRequest {
                rules: Some(rule_ref(&rules)?),
                sender_agency_id: sender,
                event_json: read(&event)?,
                case_id: case_id.unwrap_or_default(),
                case_json: case_json.map(|p| read(&p)).transpose()?.unwrap_or_default(),
                referral_sender_agency_id: referral_sender.unwrap_or_default(),
            };
            let r = c.simulate(Request::new(req)).await?.into_inner();
            if j {
                println!("{}", json(&r, "henvis.admin.v1.SimulateResponse")?);
            } else {
                println!("rule set {}; case change: {}", r.rule_set_version, r.case_change);
                for x in &r.recipients {
                    if x.outcome == "delivered" {
                        println!(
                            "  delivered  {:<28} sees {}{} under {} [{}]{}",
                            x.agency_id,
                            x.granted_classes.join(","),
                            if x.withheld_classes.is_empty() {
                                String::new()
                            } else {
                                format!(" (not {})", x.withheld_classes.join(","))
                            },
                            x.rule_ids.join(","),
                            x.legal_bases.join("; "),
                            if x.alert.is_empty() {
                                String::new()
                            } else {
                                format!(", {} alert", x.alert)
                            }
                        );
                    } else {
                        println!(
                            "  withheld   {:<28} {} ({}): {}",
                            if x.agency_id.is_empty() { "-" } else { &x.agency_id },
                            x.rule_ids.join(","),
                            x.reason,
                            x.explanation
                        );
                    }
                }
            }
        }
        AdminAction::WhatIf {
            candidate,
            days,
            max_items,
        } => {
            let r = c
                .what_if(Request::new(WhatIfRequest {
                    candidate: Some(rule_ref(&candidate)?),
                    days,
                    max_items,
                    offset: 0,
                }))
                .await?
                .into_inner();
            if j {
                println!("{}", json(&r, "henvis.admin.v1.WhatIfResponse")?);
            } else {
                println!(
                    "{} decisions of the last {days} day(s) replayed ({} skipped) on {} (live) and {}: {} deliveries gained, {} lost, {} with classes gained, {} with classes lost; {} live replays differ from the record",
                    r.replayed,
                    r.skipped,
                    r.live_version,
                    r.candidate_version,
                    r.gained_total,
                    r.lost_total,
                    r.classes_gained_total,
                    r.classes_lost_total,
                    r.differs_from_record
                );
                for c in &r.counts {
                    println!(
                        "  {:<28} {:<28} {:<20} +{} -{}",
                        c.message_type, c.recipient_agency_id, c.rule_id, c.gained, c.lost
                    );
                }
                for (label, items) in [
                    ("gained", &r.gained),
                    ("lost", &r.lost),
                    ("classes gained", &r.classes_gained),
                    ("classes lost", &r.classes_lost),
                ] {
                    for i in items {
                        println!(
                            "  {label:<15} event {} ({}) → {} [{}] {}",
                            i.event_id,
                            i.message_type,
                            i.recipient_agency_id,
                            i.rule_ids.join(","),
                            i.classes.join(",")
                        );
                    }
                }
            }
        }
        AdminAction::Directory { action } => directory(&mut c, action, j).await?,
        AdminAction::Erasure { action } => erasure(&mut c, action, j).await?,
        AdminAction::NatsAuth => {
            let r = c
                .nats_authorization(Request::new(
                    henvis_proto::henvis::admin::v1::NatsAuthorizationRequest {},
                ))
                .await?
                .into_inner();
            print!("{}", r.config);
        }
        AdminAction::Audit { case_id } => {
            for r in c
                .case_audit(Request::new(CaseAuditRequest { case_id }))
                .await?
                .into_inner()
                .records
            {
                println!("{r}");
            }
        }
        AdminAction::Report { case_id, out } => {
            out.write(
                &c.subject_access_report(Request::new(SubjectAccessReportRequest { case_id }))
                    .await?
                    .into_inner(),
            )?;
        }
        AdminAction::Alerts => {
            let r = c.admin_alerts(Request::new(AdminAlertsRequest {})).await?.into_inner();
            if j {
                println!("{}", json(&r, "henvis.admin.v1.AdminAlertsResponse")?);
            } else {
                for a in &r.alerts {
                    println!("{a}");
                }
                println!("{} deliveries in the dead-letter stream", r.dead_letters.len());
                for s in &r.dead_letters {
                    println!("  {s}");
                }
            }
        }
    }
    Ok(())
}

/// How `henvis stats` writes a table.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum StatsFormat {
    /// A plain-text table.
    Table,
    /// CSV, one line per cell, totals last.
    Csv,
    /// JSON.
    Json,
    /// An SVG bar chart.
    Svg,
}

/// Asks for the mapping study's counts and writes them.
pub async fn stats(
    conn: AdminConn,
    by: Vec<String>,
    threshold: u64,
    format: StatsFormat,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    use henvis_domain::stats::{Cell, render_svg, to_csv};
    let t = conn
        .client()
        .await?
        .stats(Request::new(henvis_proto::henvis::admin::v1::StatsRequest {
            by,
            threshold,
        }))
        .await?
        .into_inner();
    let table = henvis_convert::stats_from_wire(&t);
    let show = |c: &Cell| match c {
        Cell::Count(v) => v.to_string(),
        Cell::Suppressed => format!("<{}", table.threshold),
    };
    let text = match format {
        StatsFormat::Csv => to_csv(&table),
        StatsFormat::Json => serde_json::to_string_pretty(&table)? + "\n",
        StatsFormat::Svg => render_svg(&table),
        StatsFormat::Table => {
            let two = !table.row_totals.is_empty();
            let mut lines = vec![format!("{} by {}", table.unit, table.by.join(" × "))];
            let head: Vec<String> = if two {
                std::iter::once(String::new())
                    .chain(table.columns.iter().cloned())
                    .chain(["total".to_owned()])
                    .collect()
            } else {
                vec![String::new(), "count".into()]
            };
            let mut rows = vec![head];
            for (i, r) in table.rows.iter().enumerate() {
                let mut row = vec![r.clone()];
                row.extend(table.cells[i].iter().map(show));
                if two {
                    row.push(show(&table.row_totals[i]));
                }
                rows.push(row);
            }
            let mut last = vec!["total".to_owned()];
            if two {
                last.extend(table.column_totals.iter().map(show));
            }
            last.push(show(&table.total));
            rows.push(last);
            let widths: Vec<usize> = (0..rows[0].len())
                .map(|c| {
                    rows.iter()
                        .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            for r in rows {
                lines.push(
                    r.iter()
                        .zip(&widths)
                        .map(|(s, w)| format!("{s:>w$}"))
                        .collect::<Vec<_>>()
                        .join("  "),
                );
            }
            lines.join("\n") + "\n"
        }
    };
    match out {
        Some(p) => std::fs::write(&p, text).with_context(|| format!("writing `{}`", p.display()))?,
        None => print!("{text}"),
    }
    Ok(())
}
