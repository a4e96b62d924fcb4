//! What every henvis binary shares: telemetry set-up, the shutdown signal, and the gRPC
//! server frame (health service, reflection, graceful shutdown).
//!
//! It holds no business logic and no policy.

/// Every henvis process allocates through mimalloc: routing, sealing and gRPC make many
/// small short-lived allocations, and glibc's allocator took a fifth of the router's CPU
/// under load (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod config;
pub use config::ServiceConfig;
mod directory;
pub use directory::LiveDirectory;
pub mod cli;
pub mod console;
mod grpc_metrics;
pub mod https;
pub mod metrics;
mod readiness;
pub use readiness::{Readiness, State};
pub mod refusals;
pub mod telemetry;
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
/// the agency directory). Everyone else gets UNAUTHENTICATED on every endpoint, with the
/// reason this function gives (true of the principal, naming nobody else).
pub type Admit = Arc<dyn Fn(&Principal) -> Result<(), String> + Send + Sync>;

/// How often a server looks for renewed certificates and revocation lists.
pub const TLS_RELOAD: Duration = Duration::from_secs(1);

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

pub use henvis_bus::unix_now;

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

/// A shutdown signal fanned out to the tasks that want it.
pub type Shutdown = Box<dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// What a service's `main` does first, before it connects anywhere: opens the operator port
/// (metrics and probes, `/readyz` answering 503 `starting`) and listens for SIGTERM.
pub async fn start(metrics_listen: Option<SocketAddr>) -> anyhow::Result<(Readiness, Shutdown)> {
    let readiness = Readiness::new();
    let shutdown = fan_out(shutdown_signal());
    metrics::spawn_http(metrics_listen, readiness.clone()).await?;
    Ok((readiness, Box::new(shutdown)))
}

/// A service binary's life after its configuration was checked: the operator port, then
/// `build` (NATS, the streams, what the service loads; given up on SIGTERM), then `serve`
/// on `listen` until SIGTERM.
pub async fn run<T, S>(
    metrics_listen: Option<SocketAddr>,
    listen: SocketAddr,
    build: impl Future<Output = anyhow::Result<T>>,
    serve: impl FnOnce(T, TcpListener, Readiness, std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> S,
) -> anyhow::Result<()>
where
    S: Future<Output = anyhow::Result<()>>,
{
    let (readiness, shutdown) = start(metrics_listen).await?;
    let Some(built) = unless_stopped(build, shutdown()).await? else {
        return Ok(());
    };
    let (listener, _) = bind(listen).await?;
    let served = serve(built, listener, readiness, shutdown()).await;
    telemetry::shutdown();
    served
}

/// Runs `starting` (connecting to NATS, which may wait through an outage) unless shutdown
/// is asked for first: then `None`.
pub async fn unless_stopped<T>(
    starting: impl Future<Output = anyhow::Result<T>>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Option<T>> {
    tokio::select! {
        r = starting => r.map(Some),
        () = shutdown => Ok(None),
    }
}

/// Binds a TCP listener and reports the bound address (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(addr).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}

/// How long in-flight calls may run on after shutdown was asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `routes` plus the standard health service (reporting `serving` for each of
/// `service_names` and the whole server) and server reflection over henvis' descriptors,
/// over mutual TLS only, until `shutdown` resolves; then stops accepting and lets in-flight
/// calls finish for at most [`SHUTDOWN_GRACE`] before closing what is still open. Every request is authenticated by its client certificate first; handlers
/// find the caller's [`Principal`] in the request extensions.
pub async fn serve_grpc(
    listener: TcpListener,
    tls: Arc<tls::TlsServer>,
    admit: Admit,
    routes: Routes,
    service_names: &[&str],
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    // the health service follows readiness: SERVING only while NATS is connected and the
    // service is not draining (NOT_SERVING before, during an outage and while draining)
    tokio::spawn(
        readiness
            .clone()
            .report_to(reporter, service_names.iter().map(|s| (*s).to_owned()).collect()),
    );
    readiness.set_started();
    // reflection lists exactly what this port serves: its own services, health, reflection
    let reflection = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(henvis_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
            .include_reflection_service(false);
        for name in reflected_services(service_names) {
            b = b.with_service_name(name);
        }
        b
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
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
        let peer = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|i| i.get_ref().remote_addr())
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let principal = judge
            .authenticate(chain.as_deref().map(Vec::as_slice))
            .map_err(|reason| {
                refusals::record(refusals::Refusal::Certificate, &format!("peer:{peer}"), reason);
                tonic::Status::unauthenticated(reason)
            })?;
        if let Err(reason) = admit(&principal) {
            refusals::record(refusals::Refusal::NotAdmitted, &principal.to_string(), &reason);
            return Err(tonic::Status::unauthenticated(reason));
        }
        req.extensions_mut().insert(principal);
        Ok(req)
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(tls.clone().watch(TLS_RELOAD, async move {
        let mut rx = stopped;
        let _ = rx.wait_for(|s| *s).await;
    }));
    // the shutdown signal, seen by the server (stop accepting, drain) and by the bound
    let (asked, _) = tokio::sync::watch::channel(false);
    let (drain, bound) = (asked.subscribe(), asked.subscribe());
    let draining = readiness.clone();
    tokio::spawn(async move {
        shutdown.await;
        draining.set_draining();
        let _ = asked.send(true);
    });
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .layer(grpc_metrics::MetricsLayer)
        .layer(tonic::service::InterceptorLayer::new(authenticate))
        .add_routes(routes)
        .serve_with_incoming_shutdown(tls.incoming(listener), async move {
            let mut rx = drain;
            let _ = rx.wait_for(|s| *s).await;
        });
    // in-flight calls get SHUTDOWN_GRACE to finish; long-lived streams (inboxes, alert and
    // status subscriptions) are then closed, their unacknowledged deliveries offered again
    let served = tokio::select! {
        r = server => r,
        () = async move {
            let mut rx = bound;
            if rx.wait_for(|s| *s).await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!(grace_secs = SHUTDOWN_GRACE.as_secs(), "calls still open after the shutdown grace; closed");
            Ok(())
        }
    };
    let _ = stop.send(true);
    let _ = watcher.await;
    served?;
    Ok(())
}

/// The services reflection lists on a port serving `served`: those, health and reflection.
pub fn reflected_services(served: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = served.iter().map(|s| (*s).to_owned()).collect();
    names.extend(
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ]
        .map(str::to_owned),
    );
    names
}

/// The gRPC name of a generated service, for the health reporter.
pub fn service_name<S: NamedService>() -> &'static str {
    S::NAME
}
