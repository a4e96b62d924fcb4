//! What every henvis binary shares: telemetry set-up, the shutdown signal, and the gRPC
//! server frame (health service, reflection, graceful shutdown).
//!
//! It holds no business logic and no policy.

pub mod tls;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use henvis_domain::Principal;
use tokio::net::TcpListener;
use tonic::{
    server::NamedService,
    service::Routes,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};

/// Which authenticated principals a server lets in at all (for sector services: those in
/// the agency directory). Everyone else gets UNAUTHENTICATED on every endpoint.
pub type Admit = Arc<dyn Fn(&Principal) -> bool + Send + Sync>;

/// How often a server looks for renewed certificates and revocation lists.
pub const TLS_RELOAD: Duration = Duration::from_secs(1);

/// Initialises tracing: `RUST_LOG`-style filter from `HENVIS_LOG` (default `info`),
/// JSON lines when `HENVIS_LOG_FORMAT=json`. Logs carry ids only, never payloads.
pub fn init_telemetry() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HENVIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let result = if std::env::var("HENVIS_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // already initialised (tests run several services in one process): keep the first
    let _ = result;
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested");
}

/// One shutdown signal for several tasks: `fan_out(shutdown)` spawns a task that waits for
/// `shutdown`, and returns a function that makes a fresh future resolving when it has.
pub fn fan_out(
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Clone {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    move || {
        let mut rx = stopped.clone();
        Box::pin(async move {
            let _ = rx.wait_for(|s| *s).await;
        })
    }
}

/// Binds a TCP listener and reports the bound address (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(addr).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}

/// Serves `routes` plus the standard health service (reporting `serving` for each of
/// `service_names` and the whole server) and server reflection over henvis' descriptors,
/// over mutual TLS only, until `shutdown` resolves; then stops accepting and lets in-flight
/// calls finish. Every request is authenticated by its client certificate first; handlers
/// find the caller's [`Principal`] in the request extensions.
pub async fn serve_grpc(
    listener: TcpListener,
    tls: Arc<tls::TlsServer>,
    admit: Admit,
    routes: Routes,
    service_names: &[&str],
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in service_names {
        reporter
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(henvis_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(henvis_proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let routes = routes
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let judge = tls.clone();
    let authenticate = move |mut req: tonic::Request<()>| {
        let chain = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs);
        let principal = judge
            .authenticate(chain.as_deref().map(Vec::as_slice))
            .map_err(tonic::Status::unauthenticated)?;
        if !admit(&principal) {
            tracing::info!(%principal, "authenticated principal not in the directory; refused");
            return Err(tonic::Status::unauthenticated(
                "client certificate names a principal unknown to the directory",
            ));
        }
        req.extensions_mut().insert(principal);
        Ok(req)
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(tls.clone().watch(TLS_RELOAD, async move {
        let mut rx = stopped;
        let _ = rx.wait_for(|s| *s).await;
    }));
    let served = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .layer(tonic::service::InterceptorLayer::new(authenticate))
        .add_routes(routes)
        .serve_with_incoming_shutdown(tls.incoming(listener), shutdown)
        .await;
    let _ = stop.send(true);
    let _ = watcher.await;
    served?;
    Ok(())
}

/// The gRPC name of a generated service, for the health reporter.
pub fn service_name<S: NamedService>() -> &'static str {
    S::NAME
}
