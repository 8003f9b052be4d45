//! The Pub/Sub push wire format: what the worker receives on Cloud Run and from the local
//! dispatcher alike, and what the local queue sends.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

/// `{"message": {...}, "subscription": "projects/P/subscriptions/S"}`, as Pub/Sub POSTs it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PushEnvelope {
    pub message: PushMessage,
    pub subscription: String,
    #[serde(
        rename = "deliveryAttempt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub delivery_attempt: Option<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PushMessage {
    /// Base64 of the payload.
    #[serde(default)]
    pub data: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(rename = "messageId")]
    pub message_id: String,
    #[serde(rename = "publishTime")]
    pub publish_time: String,
    #[serde(
        rename = "orderingKey",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ordering_key: Option<String>,
}

impl PushMessage {
    pub fn payload(&self) -> Result<Vec<u8>, base64::DecodeError> {
        BASE64.decode(&self.data)
    }

    pub fn encode(data: &[u8]) -> String {
        BASE64.encode(data)
    }
}
