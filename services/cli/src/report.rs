//! Printing a subject access report: a text table, JSON, or a printable HTML document.

use std::path::PathBuf;

use henvis_domain::report::{render_html, render_text};
use henvis_proto::henvis::broker::v1::SubjectAccessReport;

/// How a report is written.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ReportFormat {
    /// A plain-text table.
    Table,
    /// JSON (the report's fields, entries oldest first).
    Json,
    /// A self-contained HTML document with print styles (print it or save it as PDF).
    Html,
}

/// Where and how to write a report.
#[derive(clap::Args, Debug)]
pub struct ReportOut {
    /// How to write it.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
    /// Write it to this file instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl ReportOut {
    /// Writes `report`.
    pub fn write(&self, report: &SubjectAccessReport) -> anyhow::Result<()> {
        let report = henvis_convert::report_from_wire(report);
        let text = match self.format {
            ReportFormat::Table => render_text(&report),
            ReportFormat::Json => serde_json::to_string_pretty(&report)? + "\n",
            ReportFormat::Html => render_html(&report),
        };
        match &self.out {
            Some(p) => {
                std::fs::write(p, text)?;
                eprintln!(
                    "report {} on case {} ({} entries) written to {}",
                    report.report_id,
                    report.case_id,
                    report.entries.len(),
                    p.display()
                );
            }
            None => print!("{text}"),
        }
        Ok(())
    }
}
