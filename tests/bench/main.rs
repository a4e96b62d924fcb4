//! henvis-bench: henvis against the raw substrate, in the same run (docs/PERFORMANCE.md).
//!
//! `cargo build --release --workspace --bins && target/release/henvis-bench --sync both`

use clap::{Parser, ValueEnum};
use henvis_tests::bench::{self, BenchConfig};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Sync {
    /// `sync_interval: always`, as shipped.
    Always,
    /// nats-server's default (flushed every two minutes).
    Default,
    /// Both, one after the other.
    Both,
}

/// Measures henvis and the raw substrate in one run and prints a Markdown table.
#[derive(Debug, Parser)]
#[command(name = "henvis-bench")]
struct Args {
    /// Durability mode of the nats-server.
    #[arg(long, value_enum, default_value = "always")]
    sync: Sync,
    /// A few seconds and a few hundred events: keeps the harness working; the figures mean
    /// nothing.
    #[arg(long)]
    smoke: bool,
    /// Referrals per henvis phase.
    #[arg(long)]
    referrals: Option<usize>,
    /// Encoded size of each referral event, bytes.
    #[arg(long)]
    payload_bytes: Option<usize>,
    /// Events already in IN before the run (routed before it).
    #[arg(long)]
    prefill_events: Option<usize>,
    /// Open cases already in the broker before the run.
    #[arg(long)]
    prefill_cases: Option<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = if args.smoke {
        BenchConfig::smoke()
    } else {
        BenchConfig::full()
    };
    if let Some(n) = args.referrals {
        config.referrals = n;
    }
    if let Some(b) = args.payload_bytes {
        config.payload_bytes = b;
    }
    if let Some(n) = args.prefill_events {
        config.prefill_events = n;
    }
    if let Some(n) = args.prefill_cases {
        config.prefill_cases = n;
    }
    let modes: &[bool] = match args.sync {
        Sync::Always => &[true],
        Sync::Default => &[false],
        Sync::Both => &[false, true],
    };
    let mut reports = Vec::new();
    for &always in modes {
        let report = bench::run(&config, always).await?;
        println!("{}", report.markdown());
        reports.push(report);
    }
    if reports.len() > 1 {
        println!("{}", bench::summary(&reports));
    }
    println!("{}", bench::machine());
    Ok(())
}
