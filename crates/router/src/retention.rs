//! Kept no longer than needed: a closed case's key, linkage tokens and links, record, alerts and alert details are
//! erased once its retention after closure has passed (audited first; the audit keeps the
//! ids for its own, longer retention), and so are the records left of a case whose key an
//! approved erasure destroyed. Any router does it; erasing twice changes nothing.

use std::{future::Future, sync::Arc};

use henvis_bus::{BusError, ROUTER_WRITER};
use henvis_domain::{AuditRecord, CaseId, EventId};

use crate::Router;

/// Sweeps every `retention_scan` until `shutdown`.
pub(crate) async fn run(router: Arc<Router>, shutdown: impl Future<Output = ()> + Send) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(router.retention_scan) => {
                match sweep(&router).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(cases = n, "closed or erased cases' records removed"),
                    Err(e) => tracing::warn!(error = %e, "retention sweep failed; retrying next time"),
                }
            }
        }
    }
}

/// Erases every closed case whose retention has passed (its key destroyed with its
/// records), and the records left of every case administrators erased; returns how many.
async fn sweep(router: &Router) -> Result<usize, BusError> {
    let now = henvis_runtime::unix_now();
    let erased = router.bus.erased_cases().await?;
    // each case's closing event as its latest revision says (None: open; a deleted record
    // is left out), read a chunk of revisions at a time: memory grows with the number of
    // cases by an id and an event id each, never by their whole records
    let mut closing: std::collections::HashMap<String, Option<String>> = std::collections::HashMap::new();
    let mut from = Some(1);
    while let Some(f) = from {
        let page = router.bus.case_revisions(f).await?;
        for (id, record) in page.revisions {
            match record {
                Some(r) => closing.insert(id, r.closed_by_event),
                None => closing.remove(&id),
            };
        }
        from = page.next;
    }
    let due: Vec<(String, String)> = closing
        .into_iter()
        .filter_map(|(id, event)| {
            if erased.contains(&id) {
                // an approved erasure destroyed the key: the id-only records go too
                return Some((id, String::new()));
            }
            let event = event?;
            let closed = EventId::parse(&event).ok()?.unix_seconds();
            (now.saturating_sub(closed) >= router.closed_case_retention_secs).then_some((id, event))
        })
        .collect();
    if due.is_empty() {
        return Ok(0);
    }
    let alerts = router.bus.stored_alerts().await?;
    for (id, event) in &due {
        let Ok(case) = CaseId::parse(id) else { continue };
        let keys: Vec<String> = alerts.iter().filter(|a| &a.case_id == id).map(|a| a.key()).collect();
        let record = AuditRecord::CaseDataErased {
            case_id: id.clone(),
            closed_by_event: event.clone(),
            alerts: keys.len() as u64,
            at: now,
        };
        router.bus.audit(ROUTER_WRITER, &format!("erase:{id}"), &record).await?;
        // the key first: from here on nothing of the case can be opened anywhere
        router.bus.destroy_case_key(id).await?;
        router.bus.forget_linkage(id).await?;
        router.bus.erase_case_data(&case, &keys).await?;
        tracing::info!(case_id = %id, alerts = keys.len(), "case erased");
    }
    Ok(due.len())
}
