//! Google Cloud adapters.

mod cloud_build;
mod cloud_run;
mod dockerfile;
mod env;
mod firestore_store;
mod google_jwt;
mod iap_identity;
mod oidc_identity;
mod pubsub_queue;
mod secret_manager;

pub use cloud_build::{CloudBuildBuilder, CloudBuildConfig};
pub use cloud_run::{CloudRunConfig, CloudRunPlatform};
pub use dockerfile::{
    GENERATED_DOCKERIGNORE, PYTHON_BASE, SourceFiles, UV_IMAGE, generated_dockerfile,
};
pub use env::{GcpEnv, Need};
pub use firestore_store::{COMPOSITE_INDEXES, FirestoreConfig, FirestoreStore};
pub use google_jwt::{GoogleJwtVerifier, JwtRules};
pub use iap_identity::{IapConfig, IapIdentity};
pub use oidc_identity::{OidcConfig, OidcIdentity};
pub use pubsub_queue::{PubSubConfig, PubSubQueue};
pub use secret_manager::{APP_SECRET_PREFIX, SecretManagerConfig, SecretManagerStore};

/// Credentials that send nothing: for the emulators and the fakes in `tests/`.
pub(crate) fn anonymous_credentials() -> google_cloud_auth::credentials::Credentials {
    google_cloud_auth::credentials::anonymous::Builder::new().build()
}
