//! A tower layer that counts every gRPC call by RPC and status code and times it until its
//! status is known: from the response headers of a trailers-only answer (every refusal),
//! else from the trailers at the end of the response body. It also opens each call's
//! server span, continuing the W3C trace context of the caller's `traceparent` metadata.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use http_body::{Body, Frame};
use opentelemetry::propagation::Extractor;
use tonic::codegen::http;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::metrics::{RpcLabels, RpcName, metrics};

/// Adds [`MetricsService`] around a gRPC server's routes.
#[derive(Clone, Copy, Debug, Default)]
pub struct MetricsLayer;

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MetricsService { inner }
    }
}

/// Counts and times each call of the wrapped service.
#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    inner: S,
}

/// One call being measured; records once, when its status is known or it is dropped.
struct Call {
    rpc: String,
    started: Instant,
    done: bool,
}

impl Call {
    fn finish(&mut self, code: &str) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let m = metrics();
        m.grpc_requests
            .get_or_create(&RpcLabels {
                rpc: self.rpc.clone(),
                code: code.to_owned(),
            })
            .inc();
        m.grpc_duration
            .get_or_create(&RpcName { rpc: self.rpc.clone() })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // the client went away (or the server closed the stream) before a status was sent
        self.finish("CANCELLED");
    }
}

/// The code name of a `grpc-status` header value.
fn code_name(value: Option<&http::HeaderValue>) -> Option<&'static str> {
    let code = value?.to_str().ok()?.parse::<i32>().ok()?;
    Some(crate::metrics::code_label(tonic::Code::from_i32(code)))
}

/// The RPC label of a request path: `/package.Service/Method` as the routes know it; any
/// other path (a scanner's guess) is one label, so no client can grow the label set.
fn rpc_label(path: &str) -> String {
    let known = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .is_some_and(|(service, method)| {
            (service.starts_with("henvis.") || service.starts_with("grpc."))
                && !method.is_empty()
                && service.len() + method.len() < 120
                && path
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_'))
        });
    if known { path.to_owned() } else { "other".to_owned() }
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for MetricsService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Send,
    S::Future: Send + 'static,
    ResBody: Body + Unpin,
{
    type Response = http::Response<MeasuredBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let mut call = Call {
            rpc: rpc_label(req.uri().path()),
            started: Instant::now(),
            done: false,
        };
        let span = tracing::info_span!(
            "grpc",
            otel.name = call.rpc.as_str(),
            otel.kind = "server",
            rpc.system = "grpc"
        );
        let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&MetadataReader(req.headers())));
        // fails only when spans are off (no OpenTelemetry layer)
        let _ = span.set_parent(parent);
        let future = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        let instrumented = span.clone();
        Box::pin(
            async move {
                let response = match future.await {
                    Ok(r) => r,
                    Err(e) => {
                        call.finish("INTERNAL");
                        return Err(e);
                    }
                };
                // a trailers-only answer carries its status in the headers
                if let Some(code) = code_name(response.headers().get("grpc-status")) {
                    call.finish(code);
                }
                Ok(response.map(|body| MeasuredBody { inner: body, call }))
            }
            .instrument(instrumented),
        )
    }
}

/// The W3C trace context in a request's metadata.
struct MetadataReader<'a>(&'a http::HeaderMap);

impl Extractor for MetadataReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// A response body that records its call's status when the trailers pass.
pub struct MeasuredBody<B> {
    inner: B,
    call: Call,
}

impl<B: Body + Unpin> Body for MeasuredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.call
                        .finish(code_name(trailers.get("grpc-status")).unwrap_or("UNKNOWN"));
                }
            }
            Poll::Ready(Some(Err(_))) => this.call.finish("INTERNAL"),
            Poll::Ready(None) if !this.call.done => this.call.finish("OK"),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rpc_paths_become_labels() {
        assert_eq!(
            rpc_label("/henvis.broker.v1.ReferralService/Submit"),
            "/henvis.broker.v1.ReferralService/Submit"
        );
        assert_eq!(
            rpc_label("/grpc.health.v1.Health/Check"),
            "/grpc.health.v1.Health/Check"
        );
        assert_eq!(rpc_label("/etc/passwd"), "other");
        assert_eq!(rpc_label("/henvis.x/<script>"), "other");
        assert_eq!(rpc_label("/"), "other");
    }

    #[test]
    fn status_headers_name_their_code() {
        let v = http::HeaderValue::from_static("3");
        assert_eq!(code_name(Some(&v)), Some("INVALID_ARGUMENT"));
        assert_eq!(code_name(None), None);
    }
}
