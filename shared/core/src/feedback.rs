//! Where a release stands, told where the data scientist already looks: on GitHub, a deployment
//! of its commit in the app's environment and a commit status (`runway/APP`); locally, a note on
//! the commit (`Forge::report`). Shared by the worker, which moves releases, and cleanup, which
//! fails the ones left stuck.
//!
//! A release that went live or failed is also announced to the app's notification targets
//! (`announce`): one queued message per target, posted by the notifications subscription.
//!
//! A report is feedback, never part of the deploy: it is bounded in time, and one the forge
//! loses is logged and let go, so GitHub being down or refusing never holds a release up. The
//! release's next report finds (or makes) its deployment again, so only that one step is lost.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::domain::{AppName, Deployment, Release};
use crate::notify::{EventKind, NotifyMessage, ReleaseEvent};
use crate::ports::{Forge, Progress, Queue, ReleaseReport, Store, Topic};

/// The longest a report may hold up the step that makes it.
const REPORT_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone)]
pub struct Feedback {
    pub forge: Arc<dyn Forge>,
    pub store: Arc<dyn Store>,
    /// Runway's console (`https://runway.example.com`), whose app page each report links to.
    pub console: Option<String>,
    /// Where announcements are queued.
    pub queue: Arc<dyn Queue>,
    pub clock: Arc<dyn Clock>,
}

impl Feedback {
    /// The release's row on its app's console page.
    pub fn release_page(&self, app: &AppName, seq: u64) -> Option<String> {
        self.console
            .as_ref()
            .map(|console| format!("{}/apps/{app}#release-{seq}", console.trim_end_matches('/')))
    }

    /// Tells the forge that `release` reached `progress`. Does nothing for a release with no
    /// commit yet (a manual deploy whose branch could not be read): there is nothing to show
    /// it on.
    pub async fn report(
        &self,
        release: &Release,
        progress: Progress,
        description: &str,
        environment_url: Option<&str>,
    ) {
        let Some(commit) = release.commit.clone() else {
            return;
        };
        let deployment = match self.store.deployment(&release.app).await {
            Ok(Some(deployment)) => deployment,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(release = %release.id, %error, "could not read the app to report the release on its commit");
                return;
            }
        };
        let repo = &deployment.repo;
        let report = ReleaseReport {
            app: release.app.clone(),
            release: release.id.clone(),
            seq: release.seq,
            commit: commit.clone(),
            progress,
            description: description.to_owned(),
            log_url: self.release_page(&release.app, release.seq),
            environment_url: environment_url.map(str::to_owned),
        };
        let progress = progress.as_str();
        match tokio::time::timeout(REPORT_TIMEOUT, self.forge.report(repo, &report)).await {
            Ok(Ok(())) => {
                tracing::info!(release = %release.id, progress, "reported on the commit");
            }
            Ok(Err(error)) => {
                tracing::warn!(release = %release.id, progress, %error, "could not report the release on its commit");
            }
            Err(_) => {
                tracing::warn!(release = %release.id, progress, "reporting the release on its commit took too long; let go");
            }
        }
        // A preview's pull request hears where the preview stands once it is live or failed.
        if let Some(pull) = &deployment.pull {
            let page = self.release_page(&release.app, release.seq);
            let details = page.map(|page| format!(" · [details]({page})"));
            let details = details.unwrap_or_default();
            let (short, seq) = (commit.short(), release.seq);
            let text = match (report.progress, environment_url) {
                (Progress::Success, Some(url)) => format!(
                    "**Runway preview** of this pull request: **live** at {url}\n\nCommit \
                     {short} · release #{seq}{details}"
                ),
                (Progress::Failure, _) => format!(
                    "**Runway preview** of this pull request: **failed** for commit {short}: \
                     {}\n\nRelease #{seq}{details}",
                    escape_markdown(description.lines().next().unwrap_or_default())
                ),
                _ => return,
            };
            self.comment(&deployment, pull.number, &text).await;
        }
    }

    /// Tells a preview's pull request that the preview was removed.
    pub async fn preview_removed(&self, preview: &Deployment) {
        if let Some(pull) = &preview.pull {
            let text = format!(
                "**Runway preview** of this pull request was removed: pull request #{} was \
                 closed.",
                pull.number
            );
            self.comment(preview, pull.number, &text).await;
        }
    }

    async fn comment(&self, preview: &Deployment, number: u64, text: &str) {
        let app = &preview.app;
        let commented = self.forge.comment_on_pull(&preview.repo, number, app, text);
        match tokio::time::timeout(REPORT_TIMEOUT, commented).await {
            Ok(Ok(())) => tracing::info!(%app, number, "commented on the pull request"),
            Ok(Err(error)) => {
                tracing::warn!(%app, number, %error, "could not comment on the pull request");
            }
            Err(_) => tracing::warn!(%app, number, "commenting took too long; let go"),
        }
    }

    /// Queues `release`'s outcome for each of its app's targets that hears it: every target a
    /// failure (or the live release turning unhealthy), those that asked a release going live.
    /// Never fails the step: a message that cannot be queued is logged and let go.
    pub async fn announce(&self, release: &Release, event: EventKind, reason: Option<&str>) {
        let deployment = match self.store.deployment(&release.app).await {
            Ok(Some(deployment)) => deployment,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(release = %release.id, %error, "could not read the app to announce the release");
                return;
            }
        };
        let targets: Vec<_> = deployment
            .notify
            .iter()
            .filter(|target| event != EventKind::Live || target.on_success)
            .collect();
        if targets.is_empty() {
            return;
        }
        let announced = ReleaseEvent::new(
            event,
            release,
            &deployment,
            reason,
            self.release_page(&release.app, release.seq),
            self.clock.now(),
        );
        for target in targets {
            let message = NotifyMessage {
                target: target.id.clone(),
                event: announced.clone(),
            };
            let published = tokio::time::timeout(
                REPORT_TIMEOUT,
                self.queue
                    .publish(Topic::Notifications, message.to_message()),
            )
            .await;
            let event = event.as_str();
            match published {
                Ok(Ok(_)) => {
                    tracing::info!(release = %release.id, event, target = %target.id, host = %target.host, "announcement queued");
                }
                Ok(Err(error)) => {
                    tracing::warn!(release = %release.id, event, target = %target.id, %error, "could not queue the announcement");
                }
                Err(_) => {
                    tracing::warn!(release = %release.id, event, target = %target.id, "queueing the announcement took too long; let go");
                }
            }
        }
    }
}

/// `text` shown as itself in GitHub's Markdown: a failure's reason may hold markup.
fn escape_markdown(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '&' => escaped.push_str("&amp;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '(' | ')' | '#' | '!' | '|' | '~' => {
                escaped.push('\\');
                escaped.push(c);
            }
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_shows_as_text_in_a_pull_request_comment() {
        // Act
        let shown =
            escape_markdown("<img src=x onerror=alert(1)> [click](https://evil.example) **b**");

        // Assert
        assert_eq!(
            shown,
            "&lt;img src=x onerror=alert\\(1\\)&gt; \\[click\\]\\(https://evil.example\\) \\*\\*b\\*\\*"
        );
    }
}
