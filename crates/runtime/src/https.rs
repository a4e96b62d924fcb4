//! HTTPS with client certificates for the web console: the same TLS material, CA and
//! revocation list as the gRPC port (`tls::TlsServer`), every request authenticated by the
//! certificate the browser presented — judged per request, so a revocation takes effect
//! on an open connection too. The handlers find the result in the request's extensions
//! as [`Authenticated`].

use std::{future::Future, sync::Arc, time::Duration};

use henvis_domain::Principal;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tower::ServiceExt as _;

/// Who a console request comes from: the principal its client certificate names, or why
/// none (no certificate, an unknown CA, revoked, expired, …).
#[derive(Clone, Debug)]
pub struct Authenticated(pub Result<Principal, &'static str>);

/// Serves `app` over HTTPS on `listener` until `shutdown`, then lets open requests finish
/// for at most [`crate::SHUTDOWN_GRACE`].
pub async fn serve(
    listener: TcpListener,
    tls: Arc<crate::tls::TlsServer>,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use futures::StreamExt as _;
    tracing::info!(addr = ?listener.local_addr().ok(), "console listening");
    let mut incoming = Box::pin(tls.clone().incoming(listener));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            s = incoming.next() => match s {
                Some(Ok(s)) => s,
                Some(Err(e)) => { tracing::debug!(error = %e, "console connection failed"); continue; }
                None => break,
            },
        };
        let chain: Option<Vec<CertificateDer<'static>>> = stream.get_ref().1.peer_certificates().map(<[_]>::to_vec);
        let tls = tls.clone();
        let app = app.clone();
        let mut stopped = stopped.clone();
        connections.spawn(async move {
            // every request is judged on its own, against the CA and revocation list in force
            let service = tower::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                let who = tls.authenticate(chain.as_deref());
                req.extensions_mut().insert(Authenticated(who));
                app.clone().oneshot(req.map(axum::body::Body::new))
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => { if let Err(e) = r { tracing::debug!(error = %e, "console connection ended"); } }
                () = async { let _ = stopped.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    let _ = stop.send(true);
    let _ = tokio::time::timeout(crate::SHUTDOWN_GRACE + Duration::from_secs(1), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
    Ok(())
}
