//! The subject access report for administrators: every entry of the case's account, those a
//! police deferral keeps from the guardian marked. Built by the same domain function the
//! router uses for guardians; its giving is audited before it leaves.

use henvis_domain::{
    CaseId, CaseRecord, PersonId,
    report::{self, ReportRequest, SubjectAccessReport, Viewer},
};
use tonic::Status;

use crate::Admin;

use crate::verify::{audit_read_error, unavailable};

impl Admin {
    /// The report on `case` for administrator `admin`, its giving audited.
    pub(crate) async fn subject_access_report(
        &self,
        admin: &PersonId,
        case: &CaseId,
    ) -> Result<SubjectAccessReport, Status> {
        let record: CaseRecord = self
            .bus
            .case(case)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| Status::not_found(format!("case_id: no case `{case}`")))?
            .record;
        let records = self
            .bus
            .audit_records(&henvis_bus::audit_case_filter(case))
            .await
            .map_err(audit_read_error)?;
        let directory = self.directory.current();
        let report_id = henvis_domain::EventId::new_now().to_string();
        let case_text = case.to_string();
        let admin_text = admin.to_string();
        let (report, _) = report::build(
            &ReportRequest {
                report_id: &report_id,
                case_id: &case_text,
                case: &record,
                viewer: Viewer::Administrator,
                requested_by: &admin_text,
                now: crate::now(),
                deferral_max_secs: self.deferral_max_secs,
                directory: &directory,
            },
            &records,
        );
        self.bus
            .audit(
                henvis_bus::ADMIN_WRITER,
                &format!("report:{report_id}"),
                &report::given(&report, 0),
            )
            .await
            .map_err(|e| {
                Status::unavailable(format!(
                    "the report's giving could not be audited, so it is not given; try again: {e}"
                ))
            })?;
        Ok(report)
    }
}
