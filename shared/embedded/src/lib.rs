//! The embedded adapters: everything Runway needs, on one machine with no cloud. They are real:
//! the queue survives restarts, the builder installs the app's requirements, the platform
//! serves the app.

mod database;
mod embedded;
mod file_secret_store;
mod git_forge;
mod local_identity;
mod packages;
mod pid_file;
pub mod process_platform;
pub mod proxy;
mod runtime_log;
pub mod sqlite_queue;
pub mod sqlite_store;
mod uv_builder;

pub use embedded::{Embedded, EmbeddedConfig};
pub use file_secret_store::FileSecretStore;
pub use git_forge::{
    GitForge, PullFile, close_pull, deliver_post_receive, open_pull, pull_comments,
};
pub use local_identity::{LocalIdentity, PushToken};
pub use process_platform::ProcessPlatform;
pub use runtime_log::LocalRuntimeLog;
pub use sqlite_queue::{PushSubscription, RetryPolicy, SqliteQueue};
pub use sqlite_store::SqliteStore;
pub use uv_builder::{UvBuilder, UvBuilderConfig};

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// What a process Runway starts for an app (its build's uv, the app itself) may see of Runway's
/// environment: enough to run and to reach the network, never Runway's own settings or
/// credentials (app code and the packages a build installs are untrusted).
const CHILD_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "PYTHONDONTWRITEBYTECODE",
];

/// What a build's uv also reads, to find the package index.
pub(crate) const BUILD_ENV: &[&str] = &[
    "UV_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_INDEX",
    "UV_NATIVE_TLS",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_CERT",
    "PIP_FIND_LINKS",
];

/// Clears `command`'s environment down to [`CHILD_ENV`] and `extra`, from Runway's own.
pub(crate) fn clean_env(command: &mut tokio::process::Command, extra: &[&str]) {
    command.env_clear();
    for name in CHILD_ENV.iter().chain(extra) {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
}

/// A child's standard output and error, both appended to the build's `log`.
pub(crate) async fn into_log(
    log: &tokio::fs::File,
) -> Result<(std::fs::File, std::fs::File), String> {
    let handle = || async {
        let file = log.try_clone().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(file.into_std().await)
    };
    Ok((handle().await?, handle().await?))
}

/// Writes `contents` to `path` with mode 0600 from the first byte (never briefly world-readable),
/// replacing any previous file atomically.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path)
}
