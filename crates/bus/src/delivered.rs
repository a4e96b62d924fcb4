//! Delivery marks: `<recipient>.<event id>` → the event's case, sender and type, written by
//! the router before it delivers. A sector service may read only its own agencies' marks
//! (a subject-scoped direct get), which is how Submit checks that a `referral_response`
//! answers an event the responder actually received, without reading anyone's statuses.

use crate::{Bus, BusError, names::delivered_key};

/// What the router remembers of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Delivered {
    /// The case of the delivered event.
    pub case_id: String,
    /// The agency that sent it.
    pub sender: String,
    /// Its message type.
    pub message_type: String,
}

impl Bus {
    /// Marks that `event_id` was delivered to `recipient` (kept if marked before).
    pub async fn mark_delivered(&self, recipient: &str, event_id: &str, mark: &Delivered) -> Result<(), BusError> {
        self.delivered_bucket()
            .await?
            .create_if_absent(&delivered_key(recipient, event_id), mark)
            .await
    }

    /// The mark of `event_id`'s delivery to `recipient`, if it was delivered.
    pub async fn delivered_to(&self, recipient: &str, event_id: &str) -> Result<Option<Delivered>, BusError> {
        let key = delivered_key(recipient, event_id);
        if henvis_domain::AgencyId::parse(recipient).is_err() || henvis_domain::EventId::parse(event_id).is_err() {
            return Ok(None);
        }
        self.delivered_bucket().await?.get_scoped(&key).await
    }
}
