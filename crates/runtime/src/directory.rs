//! The directory a service works with: its directory file (or the built-in Danish one) with
//! every approved directory change applied, swapped atomically when administrators approve
//! another. A disabled agency or person is refused by the next request.

use std::{
    future::Future,
    sync::{Arc, RwLock},
    time::Duration,
};

use futures::StreamExt;
use henvis_bus::{Bus, DIRECTORY_KEY};
use henvis_domain::{Directory, DirectoryAmendments};

/// The directory in force, swapped atomically on approved changes.
pub struct LiveDirectory {
    base: Directory,
    current: RwLock<Arc<Directory>>,
}

impl LiveDirectory {
    /// A directory that never changes (tools and tests without NATS).
    pub fn fixed(base: Directory) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(Arc::new(base.clone())),
            base,
        })
    }

    /// `base` with the approved changes stored in NATS applied.
    pub async fn load(base: Directory, bus: &Bus) -> anyhow::Result<Arc<Self>> {
        let live = Self::fixed(base);
        if let Some(a) = bus
            .directory_bucket()
            .await?
            .get::<DirectoryAmendments>(DIRECTORY_KEY)
            .await?
        {
            live.apply(&a.record)?;
        }
        Ok(live)
    }

    /// The directory in force now.
    pub fn current(&self) -> Arc<Directory> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn apply(&self, amendments: &DirectoryAmendments) -> anyhow::Result<()> {
        let d = Arc::new(amendments.apply(&self.base)?);
        match self.current.write() {
            Ok(mut g) => *g = d,
            Err(p) => *p.into_inner() = d,
        }
        Ok(())
    }

    /// Follows the approved directory changes until `shutdown`, applying each.
    pub async fn follow(self: Arc<Self>, bus: Bus, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        loop {
            let watch = match bus.directory_bucket().await {
                Ok(b) => b.watch::<DirectoryAmendments>(DIRECTORY_KEY).await,
                Err(e) => Err(e),
            };
            let mut changes = match watch {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "directory watch unavailable; retrying");
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
            };
            loop {
                tokio::select! {
                    () = &mut shutdown => return,
                    c = changes.next() => match c {
                        Some(Ok(c)) => {
                            let Some(a) = c.record else { continue };
                            match self.apply(&a) {
                                Ok(()) => tracing::info!(approved = a.applied.len(), "directory changes applied"),
                                Err(e) => tracing::error!(error = %e, "approved directory changes do not apply to this service's directory file; the previous directory stays"),
                            }
                        }
                        Some(Err(e)) => tracing::warn!(error = %e, "directory watch error"),
                        None => break,
                    }
                }
            }
        }
    }
}
