//! The mapping study's counts for administrators: from the audit's standing routing
//! decisions and the case records, by one or two dimensions, small cells suppressed.

use henvis_domain::stats::{self, Dimension, Table};
use tonic::Status;

use crate::{
    Admin,
    verify::{audit_read_error, unavailable},
};

impl Admin {
    /// The counts by `by` (one or two dimension names) with counts under `threshold` (0:
    /// the deployment's) suppressed.
    pub(crate) async fn stats(&self, by: &[String], threshold: u64) -> Result<Table, Status> {
        let names = Dimension::ALL.map(Dimension::as_str).join(", ");
        if by.is_empty() || by.len() > 2 {
            return Err(Status::invalid_argument(format!(
                "`by`: one or two dimensions expected, of {names}"
            )));
        }
        let mut dims = Vec::new();
        for (i, b) in by.iter().enumerate() {
            let d = Dimension::parse(b)
                .ok_or_else(|| Status::invalid_argument(format!("`by[{i}]`: one of {names} expected")))?;
            if dims.contains(&d) {
                return Err(Status::invalid_argument(format!("`by[{i}]`: `{b}` named twice")));
            }
            dims.push(d);
        }
        let threshold = match threshold {
            0 => self.stats_threshold,
            t if t < self.stats_threshold => {
                return Err(Status::invalid_argument(format!(
                    "`threshold`: at least the deployment's {} expected",
                    self.stats_threshold
                )));
            }
            t => t,
        };
        let records = self
            .bus
            .audit_records(&henvis_bus::audit_decisions_filter())
            .await
            .map_err(audit_read_error)?;
        let decisions = henvis_domain::standing_decisions(&records);
        let cases = self.bus.stored_cases().await.map_err(unavailable)?;
        Ok(stats::table(
            &dims,
            &decisions,
            &cases,
            &self.directory.current(),
            threshold,
        ))
    }
}
