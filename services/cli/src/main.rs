//! `henvis`: the project's command-line client. Creates a development PKI, submits
//! an example referral, follows an agency's inbox and a referral's status.

mod admin;
mod report;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use henvis_domain::Principal;
use henvis_proto::henvis::{
    broker::v1::{
        Ack, GetStatusRequest, GetSubjectAccessReportRequest, InboxRequest, SubmitRequest, inbox_request,
        inbox_response, referral_service_client::ReferralServiceClient,
    },
    events::v1::{Event, ExploitationType, Location, LocationKind, SuspectedVictimReported, event::Kind},
};
use tonic::Request;

#[derive(clap::Parser)]
#[command(name = "henvis", about = "henvis command-line client", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Development PKI: a CA, a certificate for every service, agency, contact person and
    /// administrator of the default directory, and a revocation list. Without an action it
    /// creates the folder unless it exists.
    DevPki {
        /// The PKI folder.
        #[arg(long, env = "HENVIS_PKI_DIR", default_value = ".local/pki", global = true)]
        dir: PathBuf,
        #[command(subcommand)]
        action: Option<PkiAction>,
    },
    /// Prints the nats-server `authorization` block (users and permissions) generated from
    /// the subject names in the code and the default directory: deploy/nats/auth.conf.
    NatsAuth {
        /// Print what each principal may do as the Markdown table of docs/SECURITY.md
        /// instead.
        #[arg(long)]
        markdown: bool,
    },
    /// Submits an example `suspected_victim_reported` event (test data only).
    ReportExample {
        #[command(flatten)]
        conn: Conn,
        /// Municipality code where the child is.
        #[arg(long, default_value = "101")]
        municipality: String,
    },
    /// Prints the agency's deliveries as they arrive; `--ack` acknowledges each.
    Inbox {
        #[command(flatten)]
        conn: Conn,
        /// Acknowledge each delivery after printing it.
        #[arg(long)]
        ack: bool,
        /// Stop after this many deliveries.
        #[arg(long)]
        max: Option<usize>,
    },
    /// Police contact persons: the district's case alerts.
    Alerts {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: AlertAction,
    },
    /// Rule sets: check a file locally (schema, directory, its own tests).
    Rules {
        #[command(subcommand)]
        action: RulesAction,
    },
    /// Administrators, through the admin service: propose, approve (four eyes), reject,
    /// break-glass and review, roll back, list, show, diff, simulate, what-if; a case's
    /// audit; administrator alerts.
    Admin {
        #[command(flatten)]
        conn: admin::AdminConn,
        #[command(subcommand)]
        action: admin::AdminAction,
    },
    /// Administrators: counts for the mapping study by one or two dimensions (month,
    /// district, region, sender_sector, age, outcome, message_type), small counts suppressed
    /// so that none can be worked out from the totals; as a table, CSV, JSON or an SVG chart.
    Stats {
        #[command(flatten)]
        conn: admin::AdminConn,
        /// A dimension; give it twice for a cross table.
        #[arg(long = "by", required = true)]
        by: Vec<String>,
        /// Suppress counts under this (0: the deployment's; a smaller one is refused).
        #[arg(long, default_value_t = 0)]
        threshold: u64,
        /// How to write it.
        #[arg(long, value_enum, default_value_t = admin::StatsFormat::Table)]
        format: admin::StatsFormat,
        /// Write it to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Administrators: the audit's integrity, through the admin service (`verify`).
    Audit {
        #[command(flatten)]
        conn: admin::AdminConn,
        #[command(subcommand)]
        action: admin::AuditAction,
    },
    /// Administrators: compare what was stored, decided and delivered; `--redrive` stores
    /// missing deliveries again (to recipients still entitled).
    Reconcile {
        #[command(flatten)]
        config: henvis_router::RouterConfig,
        /// Store missing deliveries again.
        #[arg(long)]
        redrive: bool,
    },
    /// A case's guardian: the subject access report on the case (who received what, on
    /// what grounds, what was withheld and why, who opened its alerts).
    Report {
        #[command(flatten)]
        conn: Conn,
        /// The case id.
        case_id: String,
        #[command(flatten)]
        out: report::ReportOut,
    },
    /// A case's guardian or municipality: cases other agencies opened that look like the
    /// same child (`list`), and this side's answer to one (`confirm`, `reject`).
    Links {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: LinksAction,
    },
    /// Prints the status of a submitted event per recipient.
    Status {
        #[command(flatten)]
        conn: Conn,
        /// The event id returned by Submit.
        event_id: String,
    },
}

#[derive(Subcommand)]
enum AlertAction {
    /// Follows the district's alerts: open ones first, then live updates.
    Watch {
        /// Resume after this position (from an earlier watch).
        #[arg(long, default_value_t = 0)]
        resume_after: u64,
    },
    /// Lists the district's alerts.
    List,
    /// Claims an alert.
    Claim {
        /// The alert id.
        alert_id: String,
    },
    /// Hands a claimed alert over to another contact person of the district.
    HandOver {
        /// The alert id.
        alert_id: String,
        /// The contact person who takes it over.
        to: String,
    },
    /// Fetches the details behind an alert (recorded in the audit).
    Fetch {
        /// The alert id.
        alert_id: String,
    },
    /// Closes the alert you hold, with its outcome.
    Close {
        /// The alert id.
        alert_id: String,
        /// How it ends.
        #[arg(long, value_enum)]
        outcome: Outcome,
    },
    /// Reopens a closed alert of your district.
    Reopen {
        /// The alert id.
        alert_id: String,
    },
}

/// How an alert ends.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Outcome {
    /// The child was found or is safe.
    ChildSafe,
    /// Taken up in a police investigation.
    InvestigationOpened,
    /// Passed to another authority.
    Referred,
    /// Nothing for the police to do.
    NoAction,
    /// The same situation as another alert.
    Duplicate,
}

#[derive(Subcommand)]
enum RulesAction {
    /// Validates a rule file against a directory and runs its test cases (the admin
    /// service does the same against the deployment's directory when it is proposed).
    Check {
        /// The rule file.
        file: PathBuf,
        /// The deployment's directory file; the built-in Danish directory when absent.
        #[arg(long, env = "HENVIS_DIRECTORY")]
        directory: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PkiAction {
    /// Issues (renews) the certificate of one principal; services pick it up without a
    /// restart, and the old one stays valid until it expires or is revoked.
    Issue {
        /// The principal, e.g. `henvis://agency/kommune-101`.
        principal: String,
        /// Days of validity.
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
    /// Revokes the current certificate of one principal and publishes a new revocation list.
    Revoke {
        /// The principal, e.g. `henvis://person/politi-fyn-kp1`.
        principal: String,
    },
    /// Publishes a fresh revocation list (services refuse everyone once it is out of date).
    Crl {
        /// Days until it is out of date.
        #[arg(long, default_value_t = 30)]
        days: i64,
    },
}

/// What to do with proposed case links.
#[derive(clap::Subcommand)]
enum LinksAction {
    /// Every proposed link of the caller's cases, newest first.
    List,
    /// The caller's case and the other concern the same child.
    Confirm {
        /// The link id.
        link_id: String,
        /// The caller's case (its side of the link).
        case_id: String,
    },
    /// They do not.
    Reject {
        /// The link id.
        link_id: String,
        /// The caller's case (its side of the link).
        case_id: String,
    },
}

#[derive(clap::Args)]
struct Conn {
    /// The sector service's address (host:port).
    #[arg(long, env = "HENVIS_ENDPOINT", default_value = "127.0.0.1:50054", global = true)]
    endpoint: String,
    /// The PKI folder holding the CA and the caller's certificate and key.
    #[arg(long, env = "HENVIS_PKI_DIR", default_value = ".local/pki", global = true)]
    pki_dir: PathBuf,
    /// Who calls: the principal of the certificate to present, e.g.
    /// `henvis://agency/ngo-redbarnet` or `henvis://person/politi-koebenhavn-kp1`.
    #[arg(long = "as", env = "HENVIS_AS", global = true)]
    principal: Option<String>,
}

impl Conn {
    async fn channel(&self) -> anyhow::Result<tonic::transport::Channel> {
        let uri = self.principal.as_deref().context(
            "say who calls with `--as <principal>` (or HENVIS_AS), e.g. `--as henvis://agency/ngo-redbarnet`",
        )?;
        let principal = Principal::from_uri(uri)?;
        let addr = self
            .endpoint
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        henvis_runtime::tls::connect_as(addr, &self.pki_dir, &principal).await
    }

    async fn client(&self) -> anyhow::Result<ReferralServiceClient<tonic::transport::Channel>> {
        Ok(ReferralServiceClient::new(self.channel().await?))
    }
}

fn dev_pki(dir: &std::path::Path, action: Option<PkiAction>) -> anyhow::Result<()> {
    use henvis_pki::{DevPki, Validity};
    match action {
        None if dir.join("ca.pem").exists() => println!("PKI `{}` exists; nothing to do", dir.display()),
        None => {
            let directory = henvis_domain::Directory::denmark()?;
            DevPki::create(dir, &directory)?;
            let n = henvis_pki::principals(&directory)?.len();
            println!(
                "created a development PKI in `{}`: CA, revocation list, {n} certificates",
                dir.display()
            );
        }
        Some(PkiAction::Issue { principal, days }) => {
            let p = Principal::from_uri(&principal)?;
            let issued = DevPki::open(dir)?.issue(&p, Validity::days(days))?;
            println!("issued certificate {} to {p}, valid {days} days", issued.serial);
        }
        Some(PkiAction::Revoke { principal }) => {
            let p = Principal::from_uri(&principal)?;
            let serial = DevPki::open(dir)?.revoke(&p)?;
            println!("revoked certificate {serial} of {p}; revocation list published");
        }
        Some(PkiAction::Crl { days }) => {
            DevPki::open(dir)?.publish_crl(time::Duration::days(days))?;
            println!("revocation list published, valid {days} days");
        }
    }
    Ok(())
}

/// Exit status 0 done, 1 refused or failed (the reason on stderr), 2 usage (clap's).
#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<tonic::Status>() {
                Some(s) => eprintln!("refused ({:?}): {}", s.code(), s.message()),
                None => eprintln!("error: {e:#}"),
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::DevPki { dir, action } => dev_pki(&dir, action),
        Command::NatsAuth { markdown: true, .. } => {
            print!("{}", henvis_bus::permissions_markdown());
            Ok(())
        }
        Command::NatsAuth { .. } => {
            print!(
                "{}",
                henvis_bus::nats_authorization(&henvis_domain::Directory::denmark()?)
            );
            Ok(())
        }
        Command::ReportExample { conn, municipality } => {
            let mut c = conn.client().await?;
            let event = Event {
                kind: Some(Kind::SuspectedVictimReported(SuspectedVictimReported {
                    municipality_code: municipality,
                    observed_at: Some(std::time::SystemTime::now().into()),
                    given_name: "Example".into(),
                    estimated_age_years: 15,
                    current_location: Some(Location {
                        kind: LocationKind::PublicPlace as i32,
                        description: "example place".into(),
                        ..Default::default()
                    }),
                    exploitation_types: vec![ExploitationType::Sexual as i32],
                    health_concerns: "example health note".into(),
                    ..Default::default()
                })),
            };
            let req = SubmitRequest {
                idempotency_key: format!("example-{}", uuid::Uuid::new_v4()),
                event: Some(event),
                actor_id: "cli".into(),
                ..Default::default()
            };
            let r = c.submit(Request::new(req)).await?.into_inner();
            println!(
                "event_id={} case_id={} duplicate={}",
                r.event_id, r.case_id, r.duplicate
            );
            Ok(())
        }
        Command::Inbox { conn, ack, max } => {
            let mut c = conn.client().await?;
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            let mut stream = c
                .inbox(Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
                .await?
                .into_inner();
            let (mut seen, mut unconfirmed) = (0usize, 0usize);
            while let Some(m) = stream.next().await {
                match m?.kind {
                    Some(inbox_response::Kind::Delivery(d)) => {
                        println!("{d:#?}");
                        if ack {
                            tx.send(InboxRequest {
                                kind: Some(inbox_request::Kind::Ack(Ack {
                                    delivery_id: d.delivery_id,
                                })),
                            })
                            .await?;
                            unconfirmed += 1;
                        }
                        seen += 1;
                    }
                    Some(inbox_response::Kind::AckConfirmed(a)) => {
                        eprintln!("acknowledged {}", a.delivery_id);
                        unconfirmed = unconfirmed.saturating_sub(1);
                    }
                    _ => {}
                }
                if max.is_some_and(|m| seen >= m) && unconfirmed == 0 {
                    break;
                }
            }
            Ok(())
        }
        Command::Alerts { conn, action } => alerts(conn, action).await,
        Command::Reconcile { config, redrive } => {
            let router = henvis_router::build(&config).await?;
            let r = router.reconcile(redrive).await?;
            println!(
                "{} events, {} decided, {} undecided; {} deliveries: {} received, {} waiting in inboxes, {} missing; re-driven {}, no longer entitled {}",
                r.events,
                r.decided,
                r.undecided.len(),
                r.deliveries,
                r.received,
                r.waiting,
                r.missing.len(),
                r.redriven,
                r.no_longer_entitled
            );
            for (event, agency) in &r.missing {
                println!("  missing: event {event} to {agency}");
            }
            Ok(())
        }
        Command::Admin { conn, action } => admin::run(conn, action).await,
        Command::Audit { conn, action } => admin::audit(conn, action).await,
        Command::Stats {
            conn,
            by,
            threshold,
            format,
            out,
        } => admin::stats(conn, by, threshold, format, out).await,
        Command::Rules {
            action: RulesAction::Check { file, directory },
        } => {
            let directory = match directory {
                Some(p) => henvis_domain::Directory::from_toml(
                    &std::fs::read_to_string(&p).with_context(|| format!("reading `{}`", p.display()))?,
                )?,
                None => henvis_domain::Directory::denmark()?,
            };
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading `{}`", file.display()))?;
            let schema = henvis_policy::Schema::from_descriptor_set(henvis_proto::FILE_DESCRIPTOR_SET)?;
            let rules = henvis_policy::RuleSet::from_toml(&file.display().to_string(), &text, &schema, &directory)?;
            println!(
                "rule set `{}`: valid; {} tests passed",
                rules.version(),
                rules.test_count()
            );
            Ok(())
        }
        Command::Report { conn, case_id, out } => {
            let mut c = conn.client().await?;
            out.write(
                &c.get_subject_access_report(Request::new(GetSubjectAccessReportRequest { case_id }))
                    .await?
                    .into_inner(),
            )
        }
        Command::Links { conn, action } => {
            let mut c = conn.client().await?;
            let print = |l: &henvis_proto::henvis::broker::v1::CaseLink| {
                let state = henvis_proto::henvis::broker::v1::CaseLinkState::try_from(l.state)
                    .map_or("unknown", |s| s.as_str_name());
                println!(
                    "link {}: your case {} looks like case {} (municipality {}) on {}; {}{}",
                    l.link_id,
                    l.case_id,
                    l.other_case_id,
                    l.other_municipality_code,
                    l.matched_on.join(", "),
                    state.trim_start_matches("CASE_LINK_STATE_").to_lowercase(),
                    match (l.answered, l.confirmed_by_this_side) {
                        (false, _) => "; not answered by you",
                        (true, true) => "; you confirmed",
                        (true, false) => "; you rejected",
                    }
                );
            };
            match &action {
                LinksAction::List => {
                    for l in c
                        .list_case_links(Request::new(henvis_proto::henvis::broker::v1::ListCaseLinksRequest {}))
                        .await?
                        .into_inner()
                        .links
                    {
                        print(&l);
                    }
                }
                LinksAction::Confirm { link_id, case_id } | LinksAction::Reject { link_id, case_id } => {
                    let (link_id, case_id) = (link_id.clone(), case_id.clone());
                    let confirm = matches!(action, LinksAction::Confirm { .. });
                    let l = c
                        .answer_case_link(Request::new(henvis_proto::henvis::broker::v1::AnswerCaseLinkRequest {
                            link_id,
                            case_id,
                            confirm,
                        }))
                        .await?
                        .into_inner();
                    print(&l);
                }
            }
            Ok(())
        }
        Command::Status { conn, event_id } => {
            let mut c = conn.client().await?;
            println!(
                "{:#?}",
                c.get_status(Request::new(GetStatusRequest { event_id }))
                    .await?
                    .into_inner()
            );
            Ok(())
        }
    }
}

async fn alerts(conn: Conn, action: AlertAction) -> anyhow::Result<()> {
    use henvis_proto::henvis::police::v1::{
        AlertsRequest, ClaimAlertRequest, FetchAlertDetailsRequest, HandOverAlertRequest, ListAlertsRequest,
        alert_service_client::AlertServiceClient, alert_update,
    };
    let mut c = AlertServiceClient::new(conn.channel().await?);
    match action {
        AlertAction::Watch { resume_after } => {
            let mut s = c
                .alerts(Request::new(AlertsRequest { resume_after }))
                .await?
                .into_inner();
            while let Some(u) = s.next().await {
                match u?.kind {
                    Some(alert_update::Kind::Alert(a)) => println!("{a:?}"),
                    Some(alert_update::Kind::CaughtUp(_)) => eprintln!("-- caught up; live updates follow"),
                    _ => {}
                }
            }
        }
        AlertAction::List => {
            for a in c
                .list_alerts(Request::new(ListAlertsRequest {}))
                .await?
                .into_inner()
                .alerts
            {
                println!("{a:?}");
            }
        }
        AlertAction::Claim { alert_id } => println!(
            "{:?}",
            c.claim_alert(Request::new(ClaimAlertRequest { alert_id }))
                .await?
                .into_inner()
        ),
        AlertAction::HandOver { alert_id, to } => {
            let r = HandOverAlertRequest {
                alert_id,
                to_person_id: to,
            };
            println!("{:?}", c.hand_over_alert(Request::new(r)).await?.into_inner());
        }
        AlertAction::Fetch { alert_id } => {
            println!(
                "{:#?}",
                c.fetch_alert_details(Request::new(FetchAlertDetailsRequest { alert_id }))
                    .await?
                    .into_inner()
            );
        }
        AlertAction::Close { alert_id, outcome } => {
            use henvis_proto::henvis::police::v1::{AlertOutcome as O, CloseAlertRequest};
            let outcome = match outcome {
                Outcome::ChildSafe => O::ChildSafe,
                Outcome::InvestigationOpened => O::InvestigationOpened,
                Outcome::Referred => O::Referred,
                Outcome::NoAction => O::NoAction,
                Outcome::Duplicate => O::Duplicate,
            } as i32;
            println!(
                "{:#?}",
                c.close_alert(Request::new(CloseAlertRequest { alert_id, outcome }))
                    .await?
                    .into_inner()
            );
        }
        AlertAction::Reopen { alert_id } => {
            use henvis_proto::henvis::police::v1::ReopenAlertRequest;
            println!(
                "{:#?}",
                c.reopen_alert(Request::new(ReopenAlertRequest { alert_id }))
                    .await?
                    .into_inner()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_are_accepted_before_or_after_the_action() {
        for args in [
            &["henvis", "dev-pki", "--dir", "X", "revoke", "henvis://agency/ngo-a"][..],
            &["henvis", "dev-pki", "revoke", "henvis://agency/ngo-a", "--dir", "X"],
            &[
                "henvis",
                "alerts",
                "--as",
                "henvis://person/p",
                "--endpoint",
                "h:1",
                "list",
            ],
            &[
                "henvis",
                "alerts",
                "list",
                "--as",
                "henvis://person/p",
                "--endpoint",
                "h:1",
            ],
        ] {
            assert!(Cli::try_parse_from(args).is_ok(), "{args:?}");
        }
        let Ok(Cli {
            command: Command::DevPki { dir, .. },
        }) = Cli::try_parse_from(["henvis", "dev-pki", "revoke", "henvis://agency/ngo-a", "--dir", "X"])
        else {
            panic!("dev-pki")
        };
        assert_eq!(dir, std::path::PathBuf::from("X"));
    }
}
