//! A preview's comment on its pull request: one per preview, found again by the hidden marker it
//! carries (`comment_marker`) and edited in place, so the pull request says where its preview
//! stands without a new comment per push.

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::errors::{Op, Permission};
use super::{GitHubForge, MAX_PAGES, PAGE_SIZE, Repo, next_page};
use runway_core::domain::{AppName, CommitSha};
use runway_core::ports::{ForgeError, PullState, comment_marker};

/// GitHub refuses a comment body longer than this.
pub(super) const MAX_COMMENT_CHARS: usize = 65_536;

#[derive(Deserialize)]
struct PullBody {
    state: String,
    head: PullHead,
}

#[derive(Deserialize)]
struct PullHead {
    sha: String,
}

#[derive(Deserialize)]
struct CommentBody {
    id: u64,
    #[serde(default)]
    body: Option<String>,
}

impl GitHubForge {
    /// `GET /repos/{owner}/{repo}/pulls/{number}`: its `state` and `head.sha`.
    pub(super) async fn pull_state(
        &self,
        repo: &Repo<'_>,
        number: u64,
    ) -> Result<PullState, ForgeError> {
        let op = Op {
            action: format!("read pull request #{number} of {repo}"),
            needs: Permission::PullRequests,
            missing: format!("pull request #{number} is not on {repo}"),
        };
        let url = self.repo_url(repo, &["pulls", &number.to_string()]);
        let body: PullBody = self.get_json(repo, url, &op).await?;
        let head = CommitSha::parse(&body.head.sha).map_err(|error| {
            ForgeError::Other(anyhow::anyhow!(
                "the head of pull request #{number}: {error}"
            ))
        })?;
        Ok(PullState {
            open: body.state == "open",
            head,
        })
    }

    pub(super) async fn upsert_comment(
        &self,
        repo: &Repo<'_>,
        number: u64,
        preview: &AppName,
        text: &str,
    ) -> Result<(), ForgeError> {
        let marker = comment_marker(preview);
        let mut body: String = text
            .chars()
            .take(MAX_COMMENT_CHARS - marker.len() - 1)
            .collect();
        body.push('\n');
        body.push_str(&marker);
        let existing = self.find_comment(repo, number, &marker).await?;
        let (method, url, action) = match existing {
            Some(id) => (
                Method::PATCH,
                self.repo_url(repo, &["issues", "comments", &id.to_string()]),
                format!("edit comment {id} on pull request #{number} of {repo}"),
            ),
            None => (
                Method::POST,
                self.repo_url(repo, &["issues", &number.to_string(), "comments"]),
                format!("comment on pull request #{number} of {repo}"),
            ),
        };
        let op = Op {
            action,
            needs: Permission::PullRequests,
            missing: format!("pull request #{number} is not on {repo}"),
        };
        self.send(repo, method, url, Some(&json!({ "body": body })), &op)
            .await
            .map(drop)
    }

    /// The comment an earlier call left, by its marker.
    async fn find_comment(
        &self,
        repo: &Repo<'_>,
        number: u64,
        marker: &str,
    ) -> Result<Option<u64>, ForgeError> {
        let op = Op {
            action: format!("list the comments on pull request #{number} of {repo}"),
            needs: Permission::PullRequests,
            missing: format!("pull request #{number} is not on {repo}"),
        };
        let mut url = self.repo_url(repo, &["issues", &number.to_string(), "comments"]);
        url.query_pairs_mut().append_pair("per_page", PAGE_SIZE);
        for _ in 0..MAX_PAGES {
            let response = self.send(repo, Method::GET, url, None, &op).await?;
            let next = next_page(response.headers());
            let page: Vec<CommentBody> = self.api.read_json(response, &op).await?;
            let ours = page
                .iter()
                .find(|comment| comment.body.as_deref().is_some_and(|b| b.contains(marker)));
            if let Some(comment) = ours {
                return Ok(Some(comment.id));
            }
            match next {
                Some(next) => url = next,
                None => return Ok(None),
            }
        }
        Ok(None)
    }
}
