use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::{AppName, Region, Timestamp};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The log service refuses reads for a while (Cloud Logging allows a project 60 a
    /// minute): try again after `retry_after`.
    #[error("{message}")]
    Throttled {
        message: String,
        retry_after: Duration,
    },
    #[error("the app's log is unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// One line an app wrote to its standard output or error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub at: Timestamp,
    /// The revision (one run of a release) that wrote it.
    pub revision: String,
    /// `stdout` or `stderr`; on Cloud Run a structured line's severity when it has one.
    pub stream: String,
    pub text: String,
}

/// Lines of a runtime log, oldest first, and where the next read goes on from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRead {
    pub lines: Vec<LogLine>,
    /// Opaque to callers; `after` takes it back. It holds no text of the log.
    pub cursor: String,
}

/// What an app running on the platform writes to standard output and error: locally its
/// processes' output, on Cloud Run the service's entries in Cloud Logging.
#[async_trait]
pub trait RuntimeLog: Send + Sync {
    /// The newest `max` lines of the app in `region`, newest last.
    async fn tail(&self, app: &AppName, region: &Region, max: usize) -> Result<LogRead, LogError>;
    /// The lines written after `cursor` (from an earlier read), at most `max`, oldest first.
    /// A cursor the log no longer reaches (rotated away, or from another app) reads from the
    /// oldest line kept.
    async fn after(
        &self,
        app: &AppName,
        region: &Region,
        cursor: &str,
        max: usize,
    ) -> Result<LogRead, LogError>;
    /// How often a page following the log looks for new lines: what the service's read
    /// quota allows.
    fn follow_every(&self) -> Duration {
        Duration::from_secs(1)
    }
}
