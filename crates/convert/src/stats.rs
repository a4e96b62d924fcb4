//! The mapping study's tables between their domain form (counted and suppressed by the
//! admin service, rendered by the CLI) and their wire form.

use henvis_domain::stats::{Cell, Table};
use henvis_proto::henvis::admin::v1::{StatsCell, StatsRow, StatsTable, stats_cell::Value};

fn cell_to_wire(c: &Cell) -> StatsCell {
    StatsCell {
        value: Some(match c {
            Cell::Count(n) => Value::Count(*n),
            Cell::Suppressed => Value::Suppressed(true),
        }),
    }
}

/// A cell as received: anything but a count (a cell this build does not know) is
/// suppressed.
fn cell_from_wire(c: Option<&StatsCell>) -> Cell {
    match c.and_then(|c| c.value.as_ref()) {
        Some(Value::Count(n)) => Cell::Count(*n),
        _ => Cell::Suppressed,
    }
}

/// The table as sent.
pub fn stats_to_wire(t: &Table) -> StatsTable {
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
                cells: r.iter().map(cell_to_wire).collect(),
            })
            .collect(),
        row_totals: t.row_totals.iter().map(cell_to_wire).collect(),
        column_totals: t.column_totals.iter().map(cell_to_wire).collect(),
        total: Some(cell_to_wire(&t.total)),
    }
}

/// The table as received.
pub fn stats_from_wire(t: &StatsTable) -> Table {
    let cells = |list: &[StatsCell]| list.iter().map(|c| cell_from_wire(Some(c))).collect::<Vec<_>>();
    Table {
        unit: t.unit.clone(),
        by: t.by.clone(),
        threshold: t.threshold,
        rows: t.rows.clone(),
        columns: t.columns.clone(),
        cells: t.cells.iter().map(|r| cells(&r.cells)).collect(),
        row_totals: cells(&t.row_totals),
        column_totals: cells(&t.column_totals),
        total: cell_from_wire(t.total.as_ref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_reads_back_as_sent() {
        let t = Table {
            unit: "cases".into(),
            by: vec!["district".into(), "age".into()],
            threshold: 5,
            rows: vec!["a".into(), "b".into()],
            columns: vec!["x".into()],
            cells: vec![vec![Cell::Count(7)], vec![Cell::Suppressed]],
            row_totals: vec![Cell::Count(7), Cell::Suppressed],
            column_totals: vec![Cell::Count(9)],
            total: Cell::Count(9),
        };
        assert_eq!(stats_from_wire(&stats_to_wire(&t)), t);
    }
}
