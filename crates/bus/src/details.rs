//! Alerted events as the router redacted them for the alerted district.

use crate::{Bus, BusError};

#[derive(serde::Serialize, serde::Deserialize)]
struct Details {
    /// The redacted envelope, sealed with its case's key, hex.
    envelope_hex: String,
}

impl Bus {
    /// Stores the redacted envelope behind alert `key` (sealed), unless stored before.
    pub async fn store_alert_details(&self, key: &str, envelope: &[u8]) -> Result<(), BusError> {
        let d = Details {
            envelope_hex: hex::encode(envelope),
        };
        self.alert_details_bucket().await?.create_if_absent(key, &d).await
    }

    /// The redacted envelope behind alert `key`, sealed (leader read).
    pub async fn alert_details(&self, key: &str) -> Result<Option<Vec<u8>>, BusError> {
        let Some(v) = self.alert_details_bucket().await?.get::<Details>(key).await? else {
            return Ok(None);
        };
        hex::decode(&v.record.envelope_hex)
            .map(Some)
            .map_err(|e| BusError::Other(format!("alert details `{key}`: {e}")))
    }
}
