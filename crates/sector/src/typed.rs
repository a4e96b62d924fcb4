//! The typed API of each sector: one RPC per event type the sector originates, each a
//! Submit of that event through the same path as the common API.

use std::sync::Arc;

use henvis_domain::Sector;
use henvis_proto::henvis::{
    broker::v1::{SubmitRequest, SubmitResponse},
    events::v1::{Event, event::Kind},
    health::v1 as health,
    ngo::v1 as ngo,
    police::v1 as police,
    social::v1 as social,
};
use tonic::{Request, Response, Status, service::Routes};

use crate::{ApiError, Core};

/// The typed services, sharing the core.
#[derive(Clone)]
pub struct Typed(pub Arc<Core>);

impl Typed {
    async fn submit(
        &self,
        request: Request<(String, String, Option<Kind>, String)>,
    ) -> Result<Response<SubmitResponse>, Status> {
        let (_, ext, (idempotency_key, case_id, kind, actor_id)) = request.into_parts();
        let kind = kind.ok_or_else(|| ApiError::field("event", "required"))?;
        let req = SubmitRequest {
            idempotency_key,
            case_id,
            event: Some(Event { kind: Some(kind) }),
            sender: None,
            actor_id,
        };
        Ok(Response::new(self.0.clone().submit_detached(ext, req).await?))
    }
}

macro_rules! typed_service {
    ($rpcs:ident, $trait:path, $pkg:ident, { $($method:ident: $req:ident => $variant:ident),* $(,)? }) => {
        /// Each RPC of the typed service and the event kind it submits.
        #[cfg(test)]
        const $rpcs: &[(&str, &str)] = &[$((stringify!($method), stringify!($variant))),*];

        #[tonic::async_trait]
        impl $trait for Typed {
            $(
                async fn $method(&self, request: Request<$pkg::$req>) -> Result<Response<SubmitResponse>, Status> {
                    self.submit(request.map(|r| (r.idempotency_key, r.case_id, r.event.map(Kind::$variant), r.actor_id))).await
                }
            )*
        }
    };
}

typed_service!(POLICE_RPCS, police::police_service_server::PoliceService, police, {
    report_suspected_victim: ReportSuspectedVictimRequest => SuspectedVictimReported,
    request_age_assessment: RequestAgeAssessmentRequest => AgeAssessmentRequested,
    report_child_missing: ReportChildMissingRequest => ChildMissing,
    update_investigation: UpdateInvestigationRequest => InvestigationUpdate,
    respond_to_referral: RespondToReferralRequest => ReferralResponse,
});

typed_service!(HEALTH_RPCS, health::health_service_server::HealthService, health, {
    report_suspected_victim: ReportSuspectedVictimRequest => SuspectedVictimReported,
    complete_age_assessment: CompleteAgeAssessmentRequest => AgeAssessmentCompleted,
    complete_health_assessment: CompleteHealthAssessmentRequest => HealthAssessmentCompleted,
    report_child_missing: ReportChildMissingRequest => ChildMissing,
    respond_to_referral: RespondToReferralRequest => ReferralResponse,
});

typed_service!(SOCIAL_RPCS, social::social_service_server::SocialService, social, {
    report_suspected_victim: ReportSuspectedVictimRequest => SuspectedVictimReported,
    request_age_assessment: RequestAgeAssessmentRequest => AgeAssessmentRequested,
    appoint_guardian: AppointGuardianRequest => GuardianAppointed,
    update_action_plan: UpdateActionPlanRequest => ActionPlanUpdated,
    request_placement: RequestPlacementRequest => PlacementRequested,
    decide_placement: DecidePlacementRequest => PlacementDecided,
    assess_return: AssessReturnRequest => ReturnAssessed,
    carry_out_return: CarryOutReturnRequest => ReturnCarriedOut,
    record_consent: RecordConsentRequest => ConsentRecorded,
    withdraw_consent: WithdrawConsentRequest => ConsentWithdrawn,
    update_never_disclose: UpdateNeverDiscloseRequest => NeverDiscloseUpdated,
    report_child_missing: ReportChildMissingRequest => ChildMissing,
    respond_to_referral: RespondToReferralRequest => ReferralResponse,
    close_case: CloseCaseRequest => CaseClosed,
    end_guardianship: EndGuardianshipRequest => GuardianshipEnded,
});

typed_service!(NGO_RPCS, ngo::ngo_service_server::NgoService, ngo, {
    report_suspected_victim: ReportSuspectedVictimRequest => SuspectedVictimReported,
    update_action_plan: UpdateActionPlanRequest => ActionPlanUpdated,
    request_placement: RequestPlacementRequest => PlacementRequested,
    decide_placement: DecidePlacementRequest => PlacementDecided,
    assess_return: AssessReturnRequest => ReturnAssessed,
    carry_out_return: CarryOutReturnRequest => ReturnCarriedOut,
    record_consent: RecordConsentRequest => ConsentRecorded,
    withdraw_consent: WithdrawConsentRequest => ConsentWithdrawn,
    update_never_disclose: UpdateNeverDiscloseRequest => NeverDiscloseUpdated,
    report_child_missing: ReportChildMissingRequest => ChildMissing,
    respond_to_referral: RespondToReferralRequest => ReferralResponse,
    close_case: CloseCaseRequest => CaseClosed,
});

/// Adds the typed service of the core's sector; returns the routes and its gRPC name.
pub(crate) fn add(routes: Routes, core: Arc<Core>, max: usize) -> (Routes, &'static str) {
    use tonic::server::NamedService;
    let t = Typed(core.clone());
    match core.profile.sector {
        Sector::Police => {
            type S = police::police_service_server::PoliceServiceServer<Typed>;
            (
                routes.add_service(S::new(t).max_decoding_message_size(max)),
                <S as NamedService>::NAME,
            )
        }
        Sector::Health => {
            type S = health::health_service_server::HealthServiceServer<Typed>;
            (
                routes.add_service(S::new(t).max_decoding_message_size(max)),
                <S as NamedService>::NAME,
            )
        }
        Sector::Social => {
            type S = social::social_service_server::SocialServiceServer<Typed>;
            (
                routes.add_service(S::new(t).max_decoding_message_size(max)),
                <S as NamedService>::NAME,
            )
        }
        Sector::Ngo => {
            type S = ngo::ngo_service_server::NgoServiceServer<Typed>;
            (
                routes.add_service(S::new(t).max_decoding_message_size(max)),
                <S as NamedService>::NAME,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeSet;

    use super::*;

    fn snake(camel: &str) -> String {
        let mut out = String::new();
        for (i, c) in camel.chars().enumerate() {
            if c.is_ascii_uppercase() {
                if i > 0 {
                    out.push('_');
                }
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    }

    /// The protos, the typed services and the originating profiles say the same: each
    /// sector's typed service has one RPC per message type its agencies originate (henvis'
    /// own types aside), and exactly the RPCs its proto declares.
    #[test]
    fn protos_typed_services_and_originating_profiles_agree() {
        let pool = prost_reflect::DescriptorPool::decode(henvis_proto::FILE_DESCRIPTOR_SET).unwrap();
        for (sector, service, rpcs) in [
            (Sector::Police, "henvis.police.v1.PoliceService", POLICE_RPCS),
            (Sector::Health, "henvis.health.v1.HealthService", HEALTH_RPCS),
            (Sector::Social, "henvis.social.v1.SocialService", SOCIAL_RPCS),
            (Sector::Ngo, "henvis.ngo.v1.NgoService", NGO_RPCS),
        ] {
            let declared: BTreeSet<String> = pool
                .get_service_by_name(service)
                .unwrap()
                .methods()
                .map(|m| snake(m.name()))
                .collect();
            let served: BTreeSet<String> = rpcs.iter().map(|(m, _)| (*m).to_owned()).collect();
            assert_eq!(declared, served, "{service}: proto and implementation");
            let submitted: BTreeSet<String> = rpcs.iter().map(|(_, k)| snake(k)).collect();
            let originated: BTreeSet<String> = henvis_domain::originates(sector)
                .iter()
                .filter(|t| !henvis_domain::SYSTEM_TYPES.contains(t))
                .map(|t| (*t).to_owned())
                .collect();
            assert_eq!(
                submitted, originated,
                "{sector}: typed RPCs and the types it originates"
            );
        }
    }
}
