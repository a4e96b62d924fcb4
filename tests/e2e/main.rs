//! End-to-end tests: a real nats-server, the real services over real TCP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test binary: failing loudly is the point

mod alerts;
mod at_rest;
mod audit_chain;
mod bad_input;
mod bench;
mod canary;
mod console;
mod corrections;
mod delivery;
mod deployment;
mod erasure;
mod governance;
mod linkage;
mod matrix;
mod operations;
mod order;
mod policy;
mod python_client;
mod recipients;
mod referral;
mod security;
mod service;
mod stats;
mod subject_access;
mod workflow;

use std::time::Duration;

use henvis_proto::henvis::{
    broker::v1::{
        Ack, Delivery, GetStatusRequest, GetStatusResponse, InboxRequest, InboxResponse, SubmitRequest, SubmitResponse,
        inbox_request, inbox_response,
    },
    events::v1::Event,
};
use henvis_tests::{Client, wait_for};
use tokio::sync::mpsc;
use tonic::Streaming;

/// How long a condition may take before a test fails.
pub const LIMIT: Duration = Duration::from_secs(20);

/// An opening report of a suspected child victim found in `municipality`.
pub fn report(municipality: &str) -> Event {
    use henvis_proto::henvis::events::v1::{SuspectedVictimReported, event};
    Event {
        kind: Some(event::Kind::SuspectedVictimReported(SuspectedVictimReported {
            municipality_code: municipality.into(),
            observed_at: Some(prost_types::Timestamp {
                seconds: 1_790_000_000,
                nanos: 0,
            }),
            ..Default::default()
        })),
    }
}

/// A status as (recipient, state, rule) triples, for comparing in one assertion.
pub fn summary(status: &GetStatusResponse) -> Vec<(&str, i32, &str)> {
    status
        .recipients
        .iter()
        .map(|r| (r.recipient_agency_id.as_str(), r.state, r.rule_id.as_str()))
        .collect()
}

/// Submits an event.
pub async fn submit(c: &mut Client, key: &str, case_id: &str, event: Event) -> Result<SubmitResponse, tonic::Status> {
    let req = SubmitRequest {
        idempotency_key: key.into(),
        case_id: case_id.into(),
        event: Some(event),
        sender: None,
        actor_id: "officer-7".into(),
    };
    let r = c.req(req);
    c.inner.submit(r).await.map(tonic::Response::into_inner)
}

/// Waits until the router has decided `event_id` and returns its status.
pub async fn routed(c: &mut Client, event_id: &str) -> GetStatusResponse {
    let req = GetStatusRequest {
        event_id: event_id.into(),
    };
    wait_for("the router to decide", LIMIT, || {
        let mut inner = c.inner.clone();
        let r = c.req(req.clone());
        async move {
            inner
                .get_status(r)
                .await
                .ok()
                .map(tonic::Response::into_inner)
                .filter(|s| s.routed)
        }
    })
    .await
    .unwrap()
}

/// An open inbox stream.
pub struct Inbox {
    tx: mpsc::Sender<InboxRequest>,
    rx: Streaming<InboxResponse>,
    buffered: std::collections::VecDeque<Delivery>,
}

impl Inbox {
    /// Opens the calling agency's inbox.
    pub async fn open(c: &mut Client) -> Self {
        Self::try_open(c).await.unwrap()
    }

    /// Opens the calling agency's inbox, or the status it was refused with.
    pub async fn try_open(c: &mut Client) -> Result<Self, tonic::Status> {
        let (tx, reqs) = mpsc::channel(16);
        let r = c.req(tokio_stream::wrappers::ReceiverStream::new(reqs));
        let rx = c.inner.inbox(r).await?.into_inner();
        Ok(Self {
            tx,
            rx,
            buffered: Default::default(),
        })
    }

    /// The next delivery, skipping heartbeats.
    pub async fn next_delivery(&mut self) -> Delivery {
        if let Some(d) = self.buffered.pop_front() {
            return d;
        }
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            let m = tokio::time::timeout_at(deadline, self.rx.message())
                .await
                .expect("a delivery in time")
                .unwrap()
                .unwrap();
            if let Some(inbox_response::Kind::Delivery(d)) = m.kind {
                return d;
            }
        }
    }

    /// Reads and acknowledges deliveries up to and including the one of `event_id`.
    pub async fn ack_through(&mut self, event_id: &str) {
        loop {
            let delivery = self.next_delivery().await;
            let done = delivery.envelope.as_ref().is_some_and(|e| e.event_id == event_id);
            self.ack(delivery.delivery_id).await;
            if done {
                return;
            }
        }
    }

    /// Acknowledges a delivery and waits for the confirmation.
    pub async fn ack(&mut self, delivery_id: u64) {
        self.tx
            .send(InboxRequest {
                kind: Some(inbox_request::Kind::Ack(Ack { delivery_id })),
            })
            .await
            .unwrap();
        loop {
            let m = tokio::time::timeout(LIMIT, self.rx.message())
                .await
                .expect("an ack confirmation")
                .unwrap()
                .unwrap();
            match m.kind {
                Some(inbox_response::Kind::AckConfirmed(a)) if a.delivery_id == delivery_id => return,
                Some(inbox_response::Kind::Delivery(d)) => self.buffered.push_back(d),
                _ => {}
            }
        }
    }

    /// Waits for the next heartbeat and returns whether any delivery came before it.
    pub async fn deliveries_before_heartbeat(&mut self) -> usize {
        let mut n = self.buffered.len();
        loop {
            let m = tokio::time::timeout(LIMIT, self.rx.message())
                .await
                .expect("a heartbeat")
                .unwrap()
                .unwrap();
            match m.kind {
                Some(inbox_response::Kind::Heartbeat(_)) => return n,
                Some(inbox_response::Kind::Delivery(_)) => n += 1,
                _ => {}
            }
        }
    }
}
