//! Whether a service is ready for calls: started (NATS, the streams and what the service
//! loads are ready), connected to NATS, and not draining. The gRPC health service, the
//! `/readyz` probe and the `henvis_ready` gauge all follow it.

use std::sync::Arc;

use tokio::sync::watch;

/// A service's readiness, shared by everything that reports it.
#[derive(Clone, Debug)]
pub struct Readiness(Arc<watch::Sender<Flags>>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Flags {
    started: bool,
    nats: bool,
    draining: bool,
}

/// What a service is doing, as the probes say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Connecting to NATS, creating or checking the streams, loading the rules.
    Starting,
    /// Serving.
    Ready,
    /// The NATS connection is lost; reconnecting.
    NatsDown,
    /// Shutting down: finishing what is in hand, taking nothing new.
    Draining,
}

impl State {
    /// The word the `/readyz` probe answers with.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Ready => "ready",
            State::NatsDown => "nats_down",
            State::Draining => "draining",
        }
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    /// Not ready: starting.
    pub fn new() -> Self {
        Self(Arc::new(watch::Sender::new(Flags {
            started: false,
            nats: true,
            draining: false,
        })))
    }

    fn state_of(f: Flags) -> State {
        if f.draining {
            State::Draining
        } else if !f.started {
            State::Starting
        } else if !f.nats {
            State::NatsDown
        } else {
            State::Ready
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        Self::state_of(*self.0.borrow())
    }

    fn update(&self, f: impl FnOnce(&mut Flags)) {
        self.0.send_if_modified(|flags| {
            let before = *flags;
            f(flags);
            *flags != before
        });
        crate::metrics::metrics()
            .ready
            .set(i64::from(self.state() == State::Ready));
    }

    /// Everything the service needs is loaded and its port is open.
    pub fn set_started(&self) {
        self.update(|f| f.started = true);
    }

    /// The NATS connection is (not) up.
    pub fn set_nats(&self, up: bool) {
        self.update(|f| f.nats = up);
    }

    /// Shutdown was asked for.
    pub fn set_draining(&self) {
        self.update(|f| f.draining = true);
    }

    /// Keeps `reporter` (the gRPC health service) in step: SERVING for the whole server and
    /// each of `services` while ready, NOT_SERVING otherwise. Runs until the last
    /// [`Readiness`] is dropped.
    pub async fn report_to(self, reporter: tonic_health::server::HealthReporter, services: Vec<String>) {
        let mut rx = self.0.subscribe();
        drop(self);
        loop {
            let status = if Self::state_of(*rx.borrow_and_update()) == State::Ready {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            for name in services.iter().map(String::as_str).chain([""]) {
                reporter.set_service_status(name, status).await;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}
