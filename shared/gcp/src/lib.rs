//! Runway's Google Cloud adapters: `FirestoreStore`, `PubSubQueue`, `CloudBuildBuilder` (with
//! the generated Dockerfile), `CloudRunPlatform`, `CloudLogging` (the apps' runtime log),
//! `SecretManagerStore`, and the IAP and OIDC identities. Which of them a function gets is the
//! wiring crate's business.

mod cloud_build;
mod cloud_logging;
mod cloud_run;
mod dockerfile;
mod firestore_store;
mod google_jwt;
mod iap_identity;
mod oidc_identity;
mod pubsub_queue;
mod secret_manager;

pub use cloud_build::{CloudBuildBuilder, CloudBuildConfig};
pub use cloud_logging::{CloudLogging, CloudLoggingConfig};
pub use cloud_run::{
    CloudRunConfig, CloudRunPlatform, IAP_ACCESSOR, INVOKER, PublicAccess, SECRET_ACCESSOR,
    account_id,
};
pub use dockerfile::{
    GENERATED_DOCKERIGNORE, Install, PYTHON_BASE, SourceFiles, UV_IMAGE, generated_dockerfile,
};
pub use firestore_store::{COMPOSITE_INDEXES, FirestoreConfig, FirestoreStore};
pub use google_jwt::{GoogleJwtVerifier, JwtRules};
pub use iap_identity::{IapConfig, IapIdentity};
pub use oidc_identity::{OidcConfig, OidcIdentity};
pub use pubsub_queue::{PubSubConfig, PubSubQueue};
pub use runway_archive::Limits as SourceLimits;
pub use secret_manager::{APP_SECRET_PREFIX, SecretManagerConfig, SecretManagerStore};

/// Credentials that send nothing: for the emulators and the fakes in `tests/`.
pub(crate) fn anonymous_credentials() -> google_cloud_auth::credentials::Credentials {
    google_cloud_auth::credentials::anonymous::Builder::new().build()
}

/// Errors from a Google client worth retrying later: the service or the network is briefly
/// unable to serve, or a wait ran out (the call may still have taken effect; every call Runway
/// retries is an upsert or a delete).
pub(crate) fn is_transient(error: &google_cloud_gax::error::Error) -> bool {
    use google_cloud_gax::error::rpc::Code;
    let transient_code = error.status().is_some_and(|status| {
        matches!(
            status.code,
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Internal
                | Code::ResourceExhausted
                | Code::Aborted
        )
    });
    transient_code
        || error.http_status_code().is_some_and(|code| code >= 500)
        || error.is_timeout()
        || error.is_exhausted()
        || error.is_io()
        || error.is_connect()
}

/// Whether Google answered `error` with the status `code`.
pub(crate) fn has_code(
    error: &google_cloud_gax::error::Error,
    code: google_cloud_gax::error::rpc::Code,
) -> bool {
    error.status().is_some_and(|status| status.code == code)
}
