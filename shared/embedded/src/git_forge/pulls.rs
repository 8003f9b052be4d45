//! Pull requests on a local repository, kept the way GitHub keeps what Runway reads of them:
//! `runway-pulls/N.json` in the git dir, the head at `refs/pull/N/head`, and a `pull_request`
//! event (`opened`, `synchronize`, `closed`) to each hook when one is opened, its branch is
//! pushed to, or it is closed. `runway pull-request open|close` is how a person makes them.
//! A preview's comment on one is a file beside it (`runway-pulls/N.comments/PREVIEW.md`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{deliver, git, read_hooks, read_json_files, repository_json, write_private};
use runway_core::domain::{AppName, Branch, CommitSha};
use runway_core::ports::{ForgeError, PullState};

const PULLS_DIR: &str = "runway-pulls";

/// One pull request, into the repository's default branch from another of its branches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullFile {
    pub number: u64,
    pub title: String,
    /// The branch it comes from.
    pub head: String,
    /// The branch it goes into.
    pub base: String,
    pub author: String,
    /// `open` or `closed`.
    pub state: String,
    #[serde(default)]
    pub merged: bool,
}

fn pulls_dir(git_dir: &Path) -> PathBuf {
    git_dir.join(PULLS_DIR)
}

fn pull_path(git_dir: &Path, number: u64) -> PathBuf {
    pulls_dir(git_dir).join(format!("{number}.json"))
}

fn read_pulls(git_dir: &Path) -> anyhow::Result<Vec<PullFile>> {
    let mut pulls: Vec<PullFile> = read_json_files(&pulls_dir(git_dir))?;
    pulls.sort_by_key(|pull| pull.number);
    Ok(pulls)
}

fn write_pull(git_dir: &Path, pull: &PullFile) -> anyhow::Result<()> {
    std::fs::create_dir_all(pulls_dir(git_dir))?;
    write_private(
        &pull_path(git_dir, pull.number),
        &serde_json::to_vec_pretty(pull)?,
    )?;
    Ok(())
}

/// The commit `branch` points at.
async fn head_of(git_dir: &Path, branch: &str) -> anyhow::Result<String> {
    let object = format!("refs/heads/{branch}^{{commit}}");
    match git(
        Some(git_dir),
        &["rev-parse", "--verify", "--quiet", &object],
    )
    .await
    {
        Ok(sha) if !sha.trim().is_empty() => Ok(sha.trim().to_owned()),
        _ => bail!("{} has no branch {branch}", git_dir.display()),
    }
}

/// Opens a pull request from `head` into the repository's default branch and tells the hooks;
/// returns its number.
pub async fn open_pull(
    git_dir: &Path,
    head: &str,
    title: &str,
    author: &str,
) -> anyhow::Result<u64> {
    Branch::parse(head).map_err(|error| anyhow::anyhow!("{error}"))?;
    let base = super::default_branch(git_dir)
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    if base == head {
        bail!("{head} is the default branch: a pull request comes from another branch");
    }
    head_of(git_dir, head).await?;
    let pulls = read_pulls(git_dir)?;
    if let Some(open) = pulls.iter().find(|p| p.head == head && p.state == "open") {
        bail!("pull request #{} from {head} is open already", open.number);
    }
    let pull = PullFile {
        number: pulls.last().map_or(1, |last| last.number + 1),
        title: title.to_owned(),
        head: head.to_owned(),
        base,
        author: author.to_owned(),
        state: "open".into(),
        merged: false,
    };
    write_pull(git_dir, &pull)?;
    announce(git_dir, &pull, "opened", author).await?;
    Ok(pull.number)
}

/// Closes pull request `number` (merged or not) and tells the hooks.
pub async fn close_pull(
    git_dir: &Path,
    number: u64,
    merged: bool,
    author: &str,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(pull_path(git_dir, number))
        .with_context(|| format!("{} has no pull request #{number}", git_dir.display()))?;
    let mut pull: PullFile = serde_json::from_str(&text)?;
    if pull.state != "open" {
        bail!("pull request #{number} is closed already");
    }
    pull.state = "closed".into();
    pull.merged = merged;
    write_pull(git_dir, &pull)?;
    announce(git_dir, &pull, "closed", author).await
}

/// After a push to `branch`: each open pull request from it is told `synchronize`.
pub(super) async fn synchronize(git_dir: &Path, branch: &str, pusher: &str) -> anyhow::Result<()> {
    for pull in read_pulls(git_dir)? {
        if pull.head == branch && pull.state == "open" {
            announce(git_dir, &pull, "synchronize", pusher).await?;
        }
    }
    Ok(())
}

/// Points `refs/pull/N/head` at the head and sends each hook a `pull_request` event, shaped as
/// GitHub's.
async fn announce(
    git_dir: &Path,
    pull: &PullFile,
    action: &str,
    sender: &str,
) -> anyhow::Result<()> {
    let head = head_of(git_dir, &pull.head).await?;
    let base = head_of(git_dir, &pull.base).await?;
    let pull_ref = format!("refs/pull/{}/head", pull.number);
    git(Some(git_dir), &["update-ref", &pull_ref, &head])
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let repository = repository_json(git_dir).await;
    let payload = json!({
        "action": action,
        "number": pull.number,
        "pull_request": {
            "number": pull.number,
            "title": pull.title,
            "html_url": format!("{}#pull-{}", git_dir.display(), pull.number),
            "state": pull.state,
            "merged": pull.merged,
            "user": { "login": pull.author },
            "head": { "ref": pull.head, "sha": head, "repo": repository },
            "base": { "ref": pull.base, "sha": base, "repo": repository },
        },
        "repository": repository,
        "sender": { "login": sender },
    });
    let hooks = read_hooks(git_dir)?;
    let what = format!("pull request #{} {action}", pull.number);
    deliver(git_dir, &hooks, "pull_request", &payload, &what).await
}

/// Pull request `number` as it stands: open or not, and its branch's head now.
pub(super) async fn state(git_dir: &Path, number: u64) -> Result<PullState, ForgeError> {
    let missing = || {
        ForgeError::NotFound(format!(
            "{} has no pull request #{number}",
            git_dir.display()
        ))
    };
    let text = std::fs::read_to_string(pull_path(git_dir, number)).map_err(|_| missing())?;
    let pull: PullFile =
        serde_json::from_str(&text).map_err(|error| ForgeError::Other(error.into()))?;
    let head = head_of(git_dir, &pull.head)
        .await
        .map_err(|error| ForgeError::NotFound(format!("{error:#}")))?;
    let head =
        CommitSha::parse(&head).map_err(|error| ForgeError::Other(anyhow::anyhow!("{error}")))?;
    Ok(PullState {
        open: pull.state == "open",
        head,
    })
}

fn comment_path(git_dir: &Path, number: u64, preview: &AppName) -> PathBuf {
    pulls_dir(git_dir)
        .join(format!("{number}.comments"))
        .join(format!("{preview}.md"))
}

/// Writes the preview's comment on pull request `number`, replacing its earlier text.
pub(super) fn comment(
    git_dir: &Path,
    number: u64,
    preview: &AppName,
    body: &str,
) -> anyhow::Result<()> {
    if !pull_path(git_dir, number).exists() {
        bail!("{} has no pull request #{number}", git_dir.display());
    }
    let path = comment_path(git_dir, number, preview);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    write_private(&path, body.as_bytes())?;
    Ok(())
}

/// The comments on pull request `number`, by the preview that wrote each.
pub fn pull_comments(git_dir: &Path, number: u64) -> Vec<(String, String)> {
    let dir = pulls_dir(git_dir).join(format!("{number}.comments"));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut comments: Vec<(String, String)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let path = entry.path();
            let name = path.file_stem()?.to_string_lossy().into_owned();
            Some((name, std::fs::read_to_string(&path).ok()?))
        })
        .collect();
    comments.sort();
    comments
}
