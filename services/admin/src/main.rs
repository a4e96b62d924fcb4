//! The henvis admin service: rule-set governance for administrators (four-eyes approval,
//! break-glass with review, rollback), simulation, diff and what-if, over mutual TLS.

use clap::Parser;

#[derive(Parser)]
#[command(name = "henvis-admin", about = "henvis admin service", version)]
struct Args {
    #[command(flatten)]
    config: henvis_admin::AdminConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    henvis_runtime::init_telemetry();
    let admin = henvis_admin::build(&args.config).await?;
    let (listener, _) = henvis_runtime::bind(args.config.listen).await?;
    henvis_admin::serve(admin, listener, henvis_runtime::shutdown_signal()).await
}
