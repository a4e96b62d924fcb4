//! The audit's hash chain, kept by the routers: each router follows AUDIT and appends one
//! link per record, in AUDIT's order, to AUDIT_CHAIN (many links per message, each message
//! expecting the one holding its predecessor to be the chain's last, so concurrent routers
//! never fork it: the loser reads the tail again), and signs a checkpoint over the chain's
//! head every [`CHECKPOINT_EVERY`] links or [`CHECKPOINT_SECS`] seconds. Off the routing
//! path: routing never waits for the chain, and any router keeps it when another dies.

use std::{future::Future, sync::Arc, time::Duration};

use henvis_bus::AppendError;
use henvis_domain::{ChainLink, Checkpoint};
use ring::signature::{Ed25519KeyPair, KeyPair as _};

use crate::Router;

/// How often a router looks for unchained audit records.
const CHAIN_TICK: Duration = Duration::from_millis(200);
/// Records chained per round trip.
const CHAIN_BATCH: usize = 2000;
/// A checkpoint at least every this many links …
pub const CHECKPOINT_EVERY: u64 = 1000;
/// … or this many seconds when there are new links.
pub const CHECKPOINT_SECS: i64 = 10;

/// The key checkpoints are signed with.
pub struct Signer {
    pair: Ed25519KeyPair,
    key_id: String,
    /// The newest checkpoint this router knows of (index, time): whether one is due is
    /// decided from it, and NATS is asked only when it says so.
    known: std::sync::Mutex<Option<(u64, i64)>>,
}

impl Signer {
    /// Reads an Ed25519 key (PKCS#8 DER).
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let der = std::fs::read(path).map_err(|e| anyhow::anyhow!("reading `{}`: {e}", path.display()))?;
        let pair = Ed25519KeyPair::from_pkcs8(&der)
            .map_err(|_| anyhow::anyhow!("`{}` is not an Ed25519 key (PKCS#8)", path.display()))?;
        let key_id = hex::encode(pair.public_key().as_ref().get(..8).unwrap_or_default());
        Ok(Self {
            pair,
            key_id,
            known: std::sync::Mutex::new(None),
        })
    }
}

use henvis_runtime::unix_now as now;

/// Keeps the chain until `shutdown`.
pub(crate) async fn run(router: Arc<Router>, shutdown: impl Future<Output = ()> + Send) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(CHAIN_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {
                if let Err(e) = router.chain_step().await {
                    tracing::warn!(error = %e, "audit chain not extended; will retry");
                }
            }
        }
    }
}

impl Router {
    /// Chains every audit record not chained yet, then signs a checkpoint when one is due.
    pub(crate) async fn chain_step(&self) -> anyhow::Result<()> {
        let mut tail = self.bus.chain_tail().await?;
        loop {
            let from = tail.as_ref().map_or(1, |t| t.link.audit_seq + 1);
            // nothing new: no reader is opened
            if self.bus.stored_range(henvis_bus::STREAM_AUDIT).await?.1 < from {
                break;
            }
            let records = self
                .bus
                .stored_records(henvis_bus::STREAM_AUDIT, from, CHAIN_BATCH)
                .await?;
            if records.is_empty() {
                break;
            }
            let mut links: Vec<ChainLink> = Vec::with_capacity(records.len());
            for r in &records {
                let l = ChainLink::next(
                    links.last().or(tail.as_ref().map(|t| &t.link)),
                    r.seq,
                    &r.subject,
                    &r.payload,
                );
                links.push(l);
            }
            match self.bus.append_links(tail.as_ref(), links).await {
                Ok(t) => tail = t.or(tail),
                // another router chained them first: read its tail and go on from there
                Err(AppendError::Conflict) => {
                    tail = self.bus.chain_tail().await?;
                    continue;
                }
                Err(AppendError::Bus(e)) => return Err(e.into()),
            }
            if records.len() < CHAIN_BATCH {
                break;
            }
        }
        match tail {
            Some(t) => self.checkpoint(t.link).await,
            None => Ok(()),
        }
    }

    /// Signs a checkpoint over `tail` when the newest one is [`CHECKPOINT_EVERY`] links or
    /// [`CHECKPOINT_SECS`] seconds behind it.
    async fn checkpoint(&self, tail: ChainLink) -> anyhow::Result<()> {
        let Some(signer) = &self.signer else {
            return Ok(());
        };
        let at = now();
        let due = |last: Option<(u64, i64)>| {
            last.is_none_or(|(index, signed)| {
                tail.index > index && (tail.index - index >= CHECKPOINT_EVERY || at - signed >= CHECKPOINT_SECS)
            })
        };
        let known = *signer.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if known.is_some() && !due(known) {
            return Ok(());
        }
        // due by what this router knows: ask NATS (another router may have signed since)
        let last = self.bus.last_checkpoint().await?.map(|c| (c.index, c.at));
        *signer.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = last;
        if !due(last) {
            return Ok(());
        }
        let message = Checkpoint::message(tail.index, tail.audit_seq, &tail.hash, at);
        let signature = hex::encode(signer.pair.sign(&message).as_ref());
        let (index, audit_seq) = (tail.index, tail.audit_seq);
        self.bus
            .publish_checkpoint(&Checkpoint {
                index,
                audit_seq,
                head: tail.hash,
                at,
                key_id: signer.key_id.clone(),
                signature,
            })
            .await?;
        *signer.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((index, at));
        Ok(())
    }
}
