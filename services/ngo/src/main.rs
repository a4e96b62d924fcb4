//! The henvis ngo service: the ngo sector's agencies submit referrals and read their inbox
//! here. All mechanics live in henvis-sector; this binary only wires them up.

#[derive(clap::Parser)]
#[command(name = "henvis-ngo", about = "henvis ngo sector service", version)]
struct Args {
    #[command(flatten)]
    config: henvis_sector::SectorConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let parsed = henvis_runtime::cli::parse::<Args>()?.map(|a| a.config);
    henvis_sector::main(henvis_domain::Sector::Ngo, parsed).await
}
