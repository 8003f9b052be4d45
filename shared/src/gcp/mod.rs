//! Google Cloud adapters.

<<<<<<< HEAD
mod firestore_store;
=======
mod cloud_run;
>>>>>>> wt-cloudrun
mod google_jwt;
mod iap_identity;
mod oidc_identity;

<<<<<<< HEAD
pub use firestore_store::{FirestoreConfig, FirestoreStore};
=======
pub use cloud_run::{CloudRunConfig, CloudRunPlatform};
>>>>>>> wt-cloudrun
pub use google_jwt::{GoogleJwtVerifier, JwtRules};
pub use iap_identity::{IapConfig, IapIdentity};
pub use oidc_identity::{OidcConfig, OidcIdentity};
