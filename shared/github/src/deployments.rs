//! How a release shows on GitHub: a deployment of its commit in the app's environment, whose
//! status follows the release (`queued → in_progress → success | failure`, or `inactive` when
//! a newer release went live first), and a commit status (`runway/APP`) that says the same on
//! the commit, its pull request and its branch.
//!
//! A deployment carries its release's id in its `payload`, so the release's later reports, or
//! a report repeated after a worker died, find it again instead of making another.

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::errors::{Op, Permission};
use super::{GitHubForge, MAX_PAGES, PAGE_SIZE, Repo, next_page};
use runway_core::ports::{ForgeError, Progress, ReleaseReport};

/// GitHub refuses a status description longer than this.
pub(super) const MAX_DESCRIPTION_CHARS: usize = 140;

#[derive(Deserialize)]
struct DeploymentBody {
    id: u64,
    #[serde(default)]
    payload: serde_json::Value,
}

/// `description` on one line, cut to what GitHub keeps, with an ellipsis where it was cut.
pub(super) fn short_description(description: &str) -> String {
    let line = description.lines().next().unwrap_or_default().trim();
    if line.chars().count() <= MAX_DESCRIPTION_CHARS {
        return line.to_owned();
    }
    let mut cut: String = line.chars().take(MAX_DESCRIPTION_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// The commit status that says what the deployment's status says: GitHub's commit statuses
/// know four states.
fn commit_state(progress: Progress) -> &'static str {
    match progress {
        Progress::Queued | Progress::InProgress => "pending",
        Progress::Success => "success",
        Progress::Failure => "failure",
        // Not deployed, and no fault of the commit's: GitHub has no neutral state here.
        Progress::Inactive => "error",
    }
}

impl GitHubForge {
    pub(super) async fn report_release(
        &self,
        repo: &Repo<'_>,
        report: &ReleaseReport,
    ) -> Result<(), ForgeError> {
        let existing = self.find_deployment(repo, report).await?;
        let deployment = match (existing, report.progress) {
            (Some(id), _) => id,
            // It never showed on GitHub; there is nothing to take back.
            (None, Progress::Inactive) => return Ok(()),
            (None, _) => self.create_deployment(repo, report).await?,
        };
        let description = short_description(&report.description);
        let op = Op {
            action: format!(
                "set the status of deployment {deployment} ({}) of {repo}",
                report.app
            ),
            needs: Permission::Deployments,
            missing: format!("deployment {deployment} is no longer on {repo}"),
        };
        let mut status = json!({
            "state": report.progress.as_str(),
            "description": description,
            // An app's older successful deployments become inactive as a newer one succeeds.
            "auto_inactive": true,
        });
        if let Some(log_url) = &report.log_url {
            status["log_url"] = json!(log_url);
        }
        if let Some(environment_url) = &report.environment_url {
            status["environment_url"] = json!(environment_url);
        }
        let url = self.repo_url(repo, &["deployments", &deployment.to_string(), "statuses"]);
        self.send(repo, Method::POST, url, Some(&status), &op)
            .await?;
        self.set_commit_status(repo, report, &description).await
    }

    /// The deployment an earlier report of this release made, if any.
    async fn find_deployment(
        &self,
        repo: &Repo<'_>,
        report: &ReleaseReport,
    ) -> Result<Option<u64>, ForgeError> {
        let op = Op {
            action: format!(
                "list the deployments of {} in {repo}",
                report.commit.short()
            ),
            needs: Permission::Deployments,
            missing: format!(
                "repository {repo} not found or not visible to Runway's GitHub credentials"
            ),
        };
        let mut url = self.repo_url(repo, &["deployments"]);
        url.query_pairs_mut()
            .append_pair("sha", report.commit.as_str())
            .append_pair("environment", report.app.as_str())
            .append_pair("per_page", PAGE_SIZE);
        for _ in 0..MAX_PAGES {
            let response = self.send(repo, Method::GET, url, None, &op).await?;
            let next = next_page(response.headers());
            let page: Vec<DeploymentBody> = self.api.read_json(response, &op).await?;
            let mine = page
                .iter()
                .find(|deployment| deployment.payload["runway_release"] == report.release.as_str());
            if let Some(deployment) = mine {
                return Ok(Some(deployment.id));
            }
            match next {
                Some(next) => url = next,
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    async fn create_deployment(
        &self,
        repo: &Repo<'_>,
        report: &ReleaseReport,
    ) -> Result<u64, ForgeError> {
        let commit = report.commit.short();
        let op = Op {
            action: format!("create a deployment of {commit} on {repo}"),
            needs: Permission::Deployments,
            missing: format!(
                "repository {repo} not found or not visible to Runway's GitHub credentials"
            ),
        };
        let body = json!({
            "ref": report.commit.as_str(),
            "environment": report.app.as_str(),
            "description": short_description(&format!("Runway release #{}", report.seq)),
            "payload": { "runway_release": report.release.as_str() },
            // Deploy exactly this commit: GitHub would otherwise merge the default branch into
            // it, and wait for every commit status on it (Runway's own pending one included).
            "auto_merge": false,
            "required_contexts": [],
            "transient_environment": false,
        });
        let url = self.repo_url(repo, &["deployments"]);
        let response = match self.send(repo, Method::POST, url, Some(&body), &op).await {
            Ok(response) => response,
            // GitHub's 422 for a ref it cannot resolve: "No ref found for: SHA".
            Err(ForgeError::Rejected(message)) if message.contains("No ref found") => {
                return Err(ForgeError::NotFound(format!(
                    "commit {commit} is not in {repo}"
                )));
            }
            Err(error) => return Err(error),
        };
        // 202 is GitHub's answer when it merged instead of deploying; auto_merge is off.
        if response.status() != http::StatusCode::CREATED {
            return Err(ForgeError::Other(anyhow::anyhow!(
                "GitHub answered {} to creating a deployment of {commit} on {repo}, not 201",
                response.status().as_u16()
            )));
        }
        let created: DeploymentBody = self.api.read_json(response, &op).await?;
        Ok(created.id)
    }

    async fn set_commit_status(
        &self,
        repo: &Repo<'_>,
        report: &ReleaseReport,
        description: &str,
    ) -> Result<(), ForgeError> {
        let op = Op {
            action: format!(
                "set the commit status of {} on {repo}",
                report.commit.short()
            ),
            needs: Permission::Deployments,
            missing: format!("commit {} is not in {repo}", report.commit.short()),
        };
        let mut status = json!({
            "state": commit_state(report.progress),
            "context": format!("runway/{}", report.app),
            "description": description,
        });
        if let Some(target) = &report.log_url {
            status["target_url"] = json!(target);
        }
        let url = self.repo_url(repo, &["statuses", report.commit.as_str()]);
        self.send(repo, Method::POST, url, Some(&status), &op)
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_description_is_one_line_cut_to_what_github_keeps() {
        assert_eq!(short_description("built\nLog: ..."), "built");
        let long = "x".repeat(200);
        let cut = short_description(&long);
        assert_eq!(cut.chars().count(), MAX_DESCRIPTION_CHARS);
        assert!(cut.ends_with('…'));
        let exact = "é".repeat(MAX_DESCRIPTION_CHARS);
        assert_eq!(short_description(&exact), exact);
    }

    #[test]
    fn the_commit_status_says_what_the_deployment_says() {
        assert_eq!(commit_state(Progress::Queued), "pending");
        assert_eq!(commit_state(Progress::InProgress), "pending");
        assert_eq!(commit_state(Progress::Success), "success");
        assert_eq!(commit_state(Progress::Failure), "failure");
        assert_eq!(commit_state(Progress::Inactive), "error");
    }
}
