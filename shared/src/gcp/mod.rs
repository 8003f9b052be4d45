//! Google Cloud adapters.

mod cloud_build;
mod dockerfile;
mod google_jwt;
mod iap_identity;
mod oidc_identity;

pub use cloud_build::{CloudBuildBuilder, CloudBuildConfig};
pub use dockerfile::{
    GENERATED_DOCKERIGNORE, PYTHON_BASE, SourceFiles, UV_IMAGE, generated_dockerfile,
};
pub use google_jwt::{GoogleJwtVerifier, JwtRules};
pub use iap_identity::{IapConfig, IapIdentity};
pub use oidc_identity::{OidcConfig, OidcIdentity};
