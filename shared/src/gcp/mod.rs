//! Google Cloud adapters.

mod cloud_run;
mod firestore_store;
mod google_jwt;
mod iap_identity;
mod oidc_identity;

pub use cloud_run::{CloudRunConfig, CloudRunPlatform};
pub use firestore_store::{FirestoreConfig, FirestoreStore};
pub use google_jwt::{GoogleJwtVerifier, JwtRules};
pub use iap_identity::{IapConfig, IapIdentity};
pub use oidc_identity::{OidcConfig, OidcIdentity};
