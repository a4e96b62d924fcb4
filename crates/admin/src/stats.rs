//! The mapping study's counts for administrators: from the audit's standing routing
//! decisions and the case records, by one or two dimensions, small cells suppressed.

use henvis_domain::{
    AuditRecord,
    stats::{self, Cell, Dimension, Table},
};
use henvis_proto::henvis::admin::v1::{StatsCell, StatsRow, StatsTable, stats_cell};
use tonic::Status;

use crate::Admin;

fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("the audit is unavailable; try again: {e}"))
}

fn wire(c: &Cell) -> StatsCell {
    StatsCell {
        value: Some(match c {
            Cell::Count(n) => stats_cell::Value::Count(*n),
            Cell::Suppressed => stats_cell::Value::Suppressed(true),
        }),
    }
}

/// A table on the wire.
pub(crate) fn to_wire(t: &Table) -> StatsTable {
    StatsTable {
        unit: t.unit.clone(),
        by: t.by.clone(),
        threshold: t.threshold,
        rows: t.rows.clone(),
        columns: t.columns.clone(),
        cells: t
            .cells
            .iter()
            .map(|r| StatsRow {
                cells: r.iter().map(wire).collect(),
            })
            .collect(),
        row_totals: t.row_totals.iter().map(wire).collect(),
        column_totals: t.column_totals.iter().map(wire).collect(),
        total: Some(wire(&t.total)),
    }
}

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
        let records: Vec<AuditRecord> = self
            .bus
            .read_subject(henvis_bus::STREAM_AUDIT, "henvis.audit.decision.>")
            .await
            .map_err(unavailable)?
            .iter()
            .map(|b| serde_json::from_slice(b))
            .collect::<Result<_, _>>()
            .map_err(|e| Status::data_loss(format!("an audit decision record does not parse: {e}")))?;
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
