//! The henvis router: the single policy enforcement point between IN and OUT.

use clap::Parser;

#[derive(Parser)]
#[command(name = "henvis-router", about = "henvis routing service", version)]
struct Args {
    #[command(flatten)]
    config: henvis_router::RouterConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    henvis_runtime::init_telemetry();
    let router = henvis_router::build(&args.config).await?;
    let (listener, _) = henvis_runtime::bind(args.config.listen).await?;
    henvis_router::serve(router, listener, henvis_runtime::shutdown_signal()).await
}
