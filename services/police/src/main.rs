//! The henvis police service: the police sector's agencies submit referrals and read their inbox
//! here. All mechanics live in henvis-sector; this binary only wires them up.

use clap::Parser;

#[derive(Parser)]
#[command(name = "henvis-police", about = "henvis police sector service", version)]
struct Args {
    #[command(flatten)]
    config: henvis_sector::SectorConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    henvis_runtime::init_telemetry();
    let core = henvis_sector::build(henvis_domain::Sector::Police, &args.config).await?;
    let (listener, _) = henvis_runtime::bind(args.config.listen).await?;
    henvis_sector::serve(core, listener, henvis_runtime::shutdown_signal()).await
}
