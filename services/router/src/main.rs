//! The henvis router: the single policy enforcement point between IN and OUT.

#[derive(clap::Parser)]
#[command(name = "henvis-router", about = "henvis routing service", version)]
struct Args {
    #[command(flatten)]
    config: henvis_router::RouterConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    henvis_router::main(henvis_runtime::cli::parse::<Args>()?.map(|a| a.config)).await
}
