//! Google Cloud adapters.

mod iap_identity;

pub use iap_identity::{IapConfig, IapIdentity};
