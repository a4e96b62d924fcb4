//! The active rule set and its hot reload. A rule set put live through the admin service
//! (proposed, tested, approved by a second administrator) is loaded,
//! validated and tested again by every router and swapped in atomically; a set that fails
//! is refused and the previous one stays. Every decision records the version that made it.

use std::{
    future::Future,
    path::Path,
    sync::{Arc, RwLock},
};

use anyhow::Context as _;
use futures::StreamExt;
use henvis_bus::Bus;
use henvis_domain::Directory;
use henvis_policy::{RuleSet, Schema};

use crate::Router;

/// The rule set shipped with henvis.
pub const DEFAULT_RULES: &str = include_str!("../../../rules/default.toml");

/// The rule set in force, swapped atomically on reload.
pub struct ActiveRules(RwLock<Arc<RuleSet>>);

impl ActiveRules {
    /// The published set if there is one; if it no longer loads (e.g. the directory changed
    /// under it), the newest approved set that does; else the file, else the shipped default.
    pub(crate) async fn load(bus: &Bus, file: Option<&Path>, schema: &Schema, dir: &Directory) -> anyhow::Result<Self> {
        if let Some(text) = bus.published_rules().await? {
            match RuleSet::from_toml("published rule set", &text, schema, dir) {
                Ok(r) => return Ok(Self(RwLock::new(Arc::new(r)))),
                Err(e) => {
                    tracing::error!(error = %e, "published rule set refused; falling back on the last approved set that loads");
                    for p in bus.approved_rule_sets().await? {
                        if p.text == text {
                            continue;
                        }
                        match RuleSet::from_toml(&p.file, &p.text, schema, dir) {
                            Ok(r) => {
                                tracing::error!(proposal = p.id, rule_set_version = %r.version(), "routing with an earlier approved rule set until the live one loads again");
                                return Ok(Self(RwLock::new(Arc::new(r))));
                            }
                            Err(e) => {
                                tracing::warn!(proposal = p.id, error = %e, "earlier approved rule set refused too")
                            }
                        }
                    }
                    tracing::error!("no approved rule set loads; using the configured file");
                }
            }
        }
        let (name, text) = match file {
            Some(p) => (
                p.display().to_string(),
                std::fs::read_to_string(p).with_context(|| format!("reading `{}`", p.display()))?,
            ),
            None => ("rules/default.toml".to_owned(), DEFAULT_RULES.to_owned()),
        };
        Ok(Self(RwLock::new(Arc::new(RuleSet::from_toml(
            &name, &text, schema, dir,
        )?))))
    }

    /// The rule set in force now.
    pub fn current(&self) -> Arc<RuleSet> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn swap(&self, rules: RuleSet) {
        let rules = Arc::new(rules);
        match self.0.write() {
            Ok(mut g) => *g = rules,
            Err(poisoned) => *poisoned.into_inner() = rules,
        }
    }
}

impl Router {
    /// Follows the rules bucket until `shutdown`, swapping in each valid published set.
    pub(crate) async fn follow_rules(self: Arc<Self>, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        // watched again whenever NATS goes away and comes back
        loop {
            let mut updates = match self.bus.watch_rules().await {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(error = %e, "rules watch unavailable; retrying");
                    tokio::select! {
                        () = &mut shutdown => return Ok(()),
                        () = tokio::time::sleep(std::time::Duration::from_millis(500)) => continue,
                    }
                }
            };
            loop {
                tokio::select! {
                    () = &mut shutdown => return Ok(()),
                    u = updates.next() => {
                        let text = match u {
                            Some(Ok(t)) => t,
                            Some(Err(e)) => { tracing::warn!(error = %e, "rules watch error"); continue; }
                            None => break,
                        };
                        match RuleSet::from_toml("published rule set", &text, &self.schema, &self.directory.current()) {
                            Ok(r) if r.version() == self.rules.current().version() => {}
                            Ok(r) => {
                                tracing::info!(rule_set_version = %r.version(), tests = r.test_count(), "rule set reloaded");
                                self.rules.swap(r);
                            }
                            Err(e) => tracing::error!(error = %e, "published rule set refused; the previous one stays in force"),
                        }
                    }
                }
            }
        }
    }
}
