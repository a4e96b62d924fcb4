//! Counts for the mapping study (kortlægning) of child trafficking: referrals by month,
//! police district, region, sender sector, age presumption, outcome and message type, from
//! the audit's routing decisions and the case records — never from anyone's identity — with
//! small-cell suppression: a count of 1 up to the threshold less one is published as `<k`,
//! and further cells are suppressed (complementary suppression) until no row, column or
//! total equation has exactly one unknown, so no suppressed count can be worked out from
//! the totals. Zero cells are published: they describe nobody.

use std::collections::{BTreeMap, BTreeSet};

use crate::{AuditDecision, CaseRecord, Directory, Sector};

/// The default threshold: counts under it are suppressed.
pub const DEFAULT_THRESHOLD: u64 = 5;

/// What a table counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dimension {
    /// The month the case was opened (`2026-11`).
    Month,
    /// The police district of the case's municipality.
    District,
    /// The region of the case's municipality.
    Region,
    /// The sector of the agency that reported the case.
    SenderSector,
    /// `child (presumed)`, `child (assessed)` or `adult (assessed)`.
    Age,
    /// The furthest step of the case: `placement`, `return`, `missing` or `none`.
    Outcome,
    /// The type of each event (counts events, not cases).
    MessageType,
}

impl Dimension {
    /// Every dimension.
    pub const ALL: [Dimension; 7] = [
        Dimension::Month,
        Dimension::District,
        Dimension::Region,
        Dimension::SenderSector,
        Dimension::Age,
        Dimension::Outcome,
        Dimension::MessageType,
    ];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Month => "month",
            Self::District => "district",
            Self::Region => "region",
            Self::SenderSector => "sender_sector",
            Self::Age => "age",
            Self::Outcome => "outcome",
            Self::MessageType => "message_type",
        }
    }

    /// The dimension named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// One published count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cell {
    /// The count.
    Count(u64),
    /// Under the threshold, or suppressed so that one under it cannot be worked out.
    Suppressed,
}

/// A published table: one or two dimensions, with totals.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Table {
    /// What is counted: `cases` or `events`.
    pub unit: String,
    /// The dimensions (one or two).
    pub by: Vec<String>,
    /// The threshold applied.
    pub threshold: u64,
    /// The first dimension's values.
    pub rows: Vec<String>,
    /// The second dimension's values (one unnamed column for a one-dimensional table).
    pub columns: Vec<String>,
    /// Counts, by row then column.
    pub cells: Vec<Vec<Cell>>,
    /// Row totals (two-dimensional tables).
    pub row_totals: Vec<Cell>,
    /// Column totals (two-dimensional tables).
    pub column_totals: Vec<Cell>,
    /// The grand total.
    pub total: Cell,
}

/// What the counts are computed from, per case.
struct Unit {
    attrs: BTreeMap<Dimension, String>,
}

fn month_of(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(|t| format!("{:04}-{:02}", t.year(), u8::from(t.month())))
        .unwrap_or_else(|_| "unknown".into())
}

/// The units to count: cases, or (with `MessageType`) the events of every case. `decisions`
/// are the standing routing decisions, `cases` the case records, by case id.
fn units(
    decisions: &[&AuditDecision],
    cases: &BTreeMap<String, CaseRecord>,
    dir: &Directory,
    events: bool,
) -> Vec<Unit> {
    let mut by_case: BTreeMap<&str, Vec<&AuditDecision>> = BTreeMap::new();
    for d in decisions {
        by_case.entry(d.case_id.as_str()).or_default().push(d);
    }
    let mut out = Vec::new();
    for (case_id, ds) in by_case {
        let Some(opening) = ds.iter().find(|d| d.message_type == "suspected_victim_reported") else {
            continue;
        };
        let record = cases.get(case_id);
        let municipality = record
            .and_then(|r| r.municipality_code.as_deref())
            .and_then(|c| dir.municipality(c));
        let sector = crate::AgencyId::parse(&opening.sender)
            .ok()
            .and_then(|a| dir.agency(&a).map(|a| a.sector));
        let types: BTreeSet<&str> = ds.iter().map(|d| d.message_type.as_str()).collect();
        let assessed = types.contains("age_assessment_completed");
        let age = match (record.is_none_or(|r| r.child), assessed) {
            (true, false) => "child (presumed)",
            (true, true) => "child (assessed)",
            (false, _) => "adult (assessed)",
        };
        let outcome = if types.contains("return_carried_out") {
            "return"
        } else if types.contains("placement_decided") {
            "placement"
        } else if types.contains("child_missing") {
            "missing"
        } else {
            "none"
        };
        let mut attrs = BTreeMap::new();
        attrs.insert(Dimension::Month, month_of(opening.decided_at));
        attrs.insert(
            Dimension::District,
            municipality.map_or("unknown".into(), |m| m.police_district.to_string()),
        );
        attrs.insert(
            Dimension::Region,
            municipality.map_or("unknown".into(), |m| m.region.to_string()),
        );
        attrs.insert(
            Dimension::SenderSector,
            sector.map_or("unknown".into(), |s: Sector| s.as_str().to_owned()),
        );
        attrs.insert(Dimension::Age, age.into());
        attrs.insert(Dimension::Outcome, outcome.into());
        if events {
            for d in &ds {
                let mut a = attrs.clone();
                a.insert(Dimension::MessageType, d.message_type.clone());
                out.push(Unit { attrs: a });
            }
        } else {
            out.push(Unit { attrs });
        }
    }
    out
}

/// Counts `decisions` (standing routing decisions) and `cases` by one or two dimensions and
/// suppresses small cells under `threshold`.
pub fn table(
    by: &[Dimension],
    decisions: &[&AuditDecision],
    cases: &BTreeMap<String, CaseRecord>,
    dir: &Directory,
    threshold: u64,
) -> Table {
    let events = by.contains(&Dimension::MessageType);
    let units = units(decisions, cases, dir, events);
    let value = |u: &Unit, d: Option<&Dimension>| d.and_then(|d| u.attrs.get(d).cloned()).unwrap_or_default();
    let rows: Vec<String> = units
        .iter()
        .map(|u| value(u, by.first()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let two = by.len() > 1;
    let columns: Vec<String> = if two {
        units
            .iter()
            .map(|u| value(u, by.get(1)))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    } else {
        vec![String::new()]
    };
    let mut counts = vec![vec![0u64; columns.len()]; rows.len()];
    for u in &units {
        let r = rows.binary_search(&value(u, by.first())).unwrap_or(0);
        let c = if two {
            columns.binary_search(&value(u, by.get(1))).unwrap_or(0)
        } else {
            0
        };
        if let Some(x) = counts.get_mut(r).and_then(|row| row.get_mut(c)) {
            *x += 1;
        }
    }
    let grid = Grid::new(&counts, two);
    let suppressed = grid.suppress(threshold);
    grid.publish(
        &suppressed,
        Table {
            unit: if events { "events" } else { "cases" }.into(),
            by: by.iter().map(|d| d.as_str().to_owned()).collect(),
            threshold,
            rows,
            columns,
            cells: Vec::new(),
            row_totals: Vec::new(),
            column_totals: Vec::new(),
            total: Cell::Count(0),
        },
    )
}

/// A table's entries (cells, then row totals, column totals and the grand total) and the
/// equations between them (each: these parts sum to that whole).
struct Grid {
    values: Vec<u64>,
    rows: usize,
    cols: usize,
    two: bool,
    equations: Vec<(Vec<usize>, usize)>,
}

impl Grid {
    fn new(counts: &[Vec<u64>], two: bool) -> Self {
        let rows = counts.len();
        let cols = counts.first().map_or(1, Vec::len);
        let cell = |r: usize, c: usize| r * cols + c;
        let mut values: Vec<u64> = counts.iter().flatten().copied().collect();
        let row_total = |r: usize| rows * cols + r;
        let col_total = |c: usize| rows * cols + rows + c;
        let grand = rows * cols + rows + cols;
        values.extend(counts.iter().map(|r| r.iter().sum::<u64>()));
        values.extend((0..cols).map(|c| counts.iter().map(|r| r[c]).sum::<u64>()));
        values.push(counts.iter().flatten().sum());
        let mut equations = Vec::new();
        if two {
            for r in 0..rows {
                equations.push(((0..cols).map(|c| cell(r, c)).collect(), row_total(r)));
            }
            for c in 0..cols {
                equations.push(((0..rows).map(|r| cell(r, c)).collect(), col_total(c)));
            }
            equations.push(((0..rows).map(row_total).collect(), grand));
            equations.push(((0..cols).map(col_total).collect(), grand));
        } else {
            equations.push(((0..rows).map(|r| cell(r, 0)).collect(), grand));
        }
        Self {
            values,
            rows,
            cols,
            two,
            equations,
        }
    }

    /// The entries to suppress: those with `0 < value < threshold`, and complements until
    /// no equation has exactly one suppressed entry.
    fn suppress(&self, threshold: u64) -> Vec<bool> {
        let mut hidden: Vec<bool> = self.values.iter().map(|v| *v > 0 && *v < threshold).collect();
        loop {
            let mut changed = false;
            for (parts, whole) in &self.equations {
                let members: Vec<usize> = parts.iter().copied().chain([*whole]).collect();
                if members.iter().filter(|m| hidden[**m]).count() != 1 {
                    continue;
                }
                // hide the smallest published member (a part before the whole; a count
                // before a zero, which tells the attacker nothing new when hidden)
                let pick = members
                    .iter()
                    .copied()
                    .filter(|m| !hidden[*m])
                    .min_by_key(|m| (*m == *whole, self.values[*m] == 0, self.values[*m]));
                if let Some(m) = pick {
                    hidden[m] = true;
                    changed = true;
                }
            }
            if !changed {
                return hidden;
            }
        }
    }

    fn publish(&self, hidden: &[bool], mut t: Table) -> Table {
        let cell = |i: usize| {
            if hidden[i] {
                Cell::Suppressed
            } else {
                Cell::Count(self.values[i])
            }
        };
        let n = self.rows * self.cols;
        t.cells = (0..self.rows)
            .map(|r| (0..self.cols).map(|c| cell(r * self.cols + c)).collect())
            .collect();
        if self.two {
            t.row_totals = (0..self.rows).map(|r| cell(n + r)).collect();
            t.column_totals = (0..self.cols).map(|c| cell(n + self.rows + c)).collect();
        }
        t.total = cell(n + self.rows + self.cols);
        t
    }
}

/// The values an attacker works out from `t` by solving, again and again, every row, column
/// and total equation with exactly one unknown (for tests and audits of a publication).
pub fn recoverable(t: &Table) -> usize {
    let two = !t.row_totals.is_empty();
    let rows = t.rows.len();
    let cols = t.columns.len();
    let mut known: Vec<Option<u64>> = t
        .cells
        .iter()
        .flatten()
        .chain(&t.row_totals)
        .chain(&t.column_totals)
        .chain([&t.total])
        .map(|c| match c {
            Cell::Count(v) => Some(*v),
            Cell::Suppressed => None,
        })
        .collect();
    if !two {
        // a one-dimensional table: placeholders for the absent margins
        let n = rows * cols;
        known.splice(n..n, std::iter::repeat_n(Some(0), rows + cols));
    }
    let equations = Grid::new(&vec![vec![0; cols]; rows], two).equations;
    let unknown_at_start = known.iter().filter(|k| k.is_none()).count();
    loop {
        let mut progress = false;
        for (parts, whole) in &equations {
            let members: Vec<usize> = parts.iter().copied().chain([*whole]).collect();
            let missing: Vec<usize> = members.iter().copied().filter(|m| known[*m].is_none()).collect();
            if missing.len() != 1 {
                continue;
            }
            let sum_parts: u64 = parts.iter().filter_map(|p| known[*p]).sum();
            let m = missing[0];
            known[m] = Some(if m == *whole {
                sum_parts
            } else {
                known[*whole].unwrap_or(0).saturating_sub(sum_parts)
            });
            progress = true;
        }
        if !progress {
            break;
        }
    }
    unknown_at_start - known.iter().filter(|k| k.is_none()).count()
}

/// The table as CSV: a header of the dimensions and `count`, one line per cell, the totals
/// last; suppressed counts as `<threshold`.
pub fn to_csv(t: &Table) -> String {
    let show = |c: &Cell| match c {
        Cell::Count(v) => v.to_string(),
        Cell::Suppressed => format!("<{}", t.threshold),
    };
    let quote = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    let two = !t.row_totals.is_empty();
    let mut out = t.by.join(",") + ",count\n";
    for (r, row) in t.rows.iter().enumerate() {
        for (c, col) in t.columns.iter().enumerate() {
            let cell = &t.cells[r][c];
            if two {
                out += &format!("{},{},{}\n", quote(row), quote(col), show(cell));
            } else {
                out += &format!("{},{}\n", quote(row), show(cell));
            }
        }
    }
    if two {
        for (r, row) in t.rows.iter().enumerate() {
            out += &format!("{},total,{}\n", quote(row), show(&t.row_totals[r]));
        }
        for (c, col) in t.columns.iter().enumerate() {
            out += &format!("total,{},{}\n", quote(col), show(&t.column_totals[c]));
        }
        out += &format!("total,total,{}\n", show(&t.total));
    } else {
        out += &format!("total,{}\n", show(&t.total));
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A bar chart of the table as a self-contained SVG document: one bar per row (the row
/// totals of a two-dimensional table); a suppressed count is drawn as an outlined bar at the
/// threshold's height, labelled `<k`, so the chart shows no more than the table.
pub fn render_svg(t: &Table) -> String {
    let bars: Vec<(&str, &Cell)> = if t.row_totals.is_empty() {
        t.rows
            .iter()
            .map(String::as_str)
            .zip(t.cells.iter().filter_map(|r| r.first()))
            .collect()
    } else {
        t.rows.iter().map(String::as_str).zip(t.row_totals.iter()).collect()
    };
    let height = |c: &Cell| match c {
        Cell::Count(v) => *v,
        Cell::Suppressed => t.threshold,
    };
    let max = bars.iter().map(|(_, c)| height(c)).max().unwrap_or(1).max(1);
    let (w, bar, gap, top, plot) = (60 + bars.len() * 48, 36usize, 12usize, 40usize, 240usize);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\" role=\"img\">\n<title>henvis: {} by {}</title>\n<text x=\"10\" y=\"20\" font-size=\"14\">{} by {} (counts under {} shown as &lt;{})</text>\n",
        top + plot + 110,
        escape(&t.unit),
        escape(&t.by.join(" and ")),
        escape(&t.unit),
        escape(&t.by.first().cloned().unwrap_or_default()),
        t.threshold,
        t.threshold
    );
    for (i, (label, c)) in bars.iter().enumerate() {
        let x = 40 + i * (bar + gap);
        let h = (height(c) as usize * plot / max as usize).max(1);
        let y = top + plot - h;
        let (fill, text) = match c {
            Cell::Count(v) => ("fill=\"#3b6ea8\"".to_owned(), v.to_string()),
            Cell::Suppressed => (
                "fill=\"none\" stroke=\"#3b6ea8\" stroke-dasharray=\"3 2\"".to_owned(),
                format!("&lt;{}", t.threshold),
            ),
        };
        out += &format!(
            "<rect x=\"{x}\" y=\"{y}\" width=\"{bar}\" height=\"{h}\" {fill}/>\n<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{text}</text>\n<text transform=\"translate({},{}) rotate(60)\">{}</text>\n",
            x + bar / 2,
            y.saturating_sub(4),
            x + 4,
            top + plot + 12,
            escape(label)
        );
    }
    out + "</svg>\n"
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn grid_table(counts: Vec<Vec<u64>>, two: bool, k: u64) -> Table {
        let grid = Grid::new(&counts, two);
        let hidden = grid.suppress(k);
        grid.publish(
            &hidden,
            Table {
                unit: "cases".into(),
                by: vec!["a".into()],
                threshold: k,
                rows: (0..counts.len()).map(|i| i.to_string()).collect(),
                columns: (0..counts[0].len()).map(|i| i.to_string()).collect(),
                cells: vec![],
                row_totals: vec![],
                column_totals: vec![],
                total: Cell::Count(0),
            },
        )
    }

    #[test]
    fn a_single_small_cell_is_hidden_with_a_complement_and_cannot_be_worked_out() {
        let t = grid_table(vec![vec![12], vec![3], vec![20], vec![0]], false, 5);
        let cells: Vec<Cell> = t.cells.iter().map(|r| r[0]).collect();
        assert_eq!(
            cells,
            [Cell::Suppressed, Cell::Suppressed, Cell::Count(20), Cell::Count(0)],
            "the 3 hidden, and the smallest other count with it"
        );
        assert_eq!(t.total, Cell::Count(35));
        assert_eq!(recoverable(&t), 0);
    }

    #[test]
    fn no_cell_under_the_threshold_is_published_or_recoverable_in_any_small_table() {
        // every 3×3 table with counts from {0, 1, 4, 5, 9}: an exhaustive check that no
        // count of 1 to 4 is shown or can be worked out from rows, columns and totals
        let values = [0u64, 1, 4, 5, 9];
        let mut checked = 0;
        let mut seed = 7u64;
        for _ in 0..20_000 {
            let mut counts = vec![vec![0u64; 3]; 3];
            for cell in counts.iter_mut().flatten() {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                *cell = values[(seed >> 33) as usize % values.len()];
            }
            let t = grid_table(counts.clone(), true, 5);
            let published_small = t
                .cells
                .iter()
                .flatten()
                .chain(&t.row_totals)
                .chain(&t.column_totals)
                .chain([&t.total])
                .any(|c| matches!(c, Cell::Count(v) if *v > 0 && *v < 5));
            assert!(!published_small, "{counts:?} → {t:?}");
            assert_eq!(recoverable(&t), 0, "{counts:?} → {t:?}");
            checked += 1;
        }
        assert_eq!(checked, 20_000);
    }

    #[test]
    fn csv_shows_suppressed_counts_as_under_the_threshold() {
        let t = grid_table(vec![vec![12, 3], vec![20, 7]], true, 5);
        let csv = to_csv(&t);
        assert!(csv.contains("<5"), "{csv}");
        assert!(csv.ends_with("total,total,42\n"), "{csv}");
        let svg = render_svg(&t);
        assert!(
            svg.starts_with("<svg") && svg.contains("&lt;5") && svg.matches("<rect").count() == 2,
            "{svg}"
        );
    }
}
