//! The henvis admin service: rule-set governance for administrators (four-eyes approval,
//! break-glass with review, rollback), simulation, diff and what-if, over mutual TLS.

#[derive(clap::Parser)]
#[command(name = "henvis-admin", about = "henvis admin service", version)]
struct Args {
    #[command(flatten)]
    config: henvis_admin::AdminConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    henvis_admin::main(henvis_runtime::cli::parse::<Args>()?.map(|a| a.config)).await
}
