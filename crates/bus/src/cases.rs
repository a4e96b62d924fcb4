//! Case records in the case bucket.

use henvis_domain::{CaseId, CaseRecord};

use crate::{Bus, BusError, Versioned};

/// A case record and the bucket revision it was read at.
pub type VersionedCase = Versioned<CaseRecord>;

impl Bus {
    /// Reads a case record from the stream leader.
    pub async fn case(&self, id: &CaseId) -> Result<Option<VersionedCase>, BusError> {
        self.case_bucket().await?.get(&id.to_string()).await
    }

    /// Erases what the broker holds about a case beyond the audit: its case record and the
    /// alert records and details under `alert_keys`, every revision.
    pub async fn erase_case_data(&self, id: &CaseId, alert_keys: &[String]) -> Result<(), BusError> {
        for key in alert_keys {
            self.alert_details_bucket().await?.purge(key).await?;
            self.alert_bucket().await?.purge(key).await?;
        }
        self.case_bucket().await?.purge(&id.to_string()).await
    }

    /// Applies `change` to the case record with compare-and-set, starting from `known`, the
    /// record as the caller just read it (`None`: read as absent), which saves a read; a
    /// conflict reads again and re-applies. Creates the record from `CaseRecord::new()`
    /// when absent and `create` is set.
    pub async fn modify_case_from(
        &self,
        id: &CaseId,
        known: Option<VersionedCase>,
        create: bool,
        change: impl FnMut(&mut CaseRecord) -> bool,
    ) -> Result<Option<VersionedCase>, BusError> {
        self.case_bucket()
            .await?
            .modify_from(&id.to_string(), Some(known), || create.then(CaseRecord::new), change)
            .await
    }
}
