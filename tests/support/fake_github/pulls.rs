//! Pull requests and their comments, as far as Runway reads them: a test opens, pushes to and
//! closes a pull request, and the fake delivers the `pull_request` event (`opened`,
//! `synchronize`, `closed`) to every active hook subscribed to it, shaped as GitHub's webhook
//! payload. Comments are issue comments (`/repos/{o}/{r}/issues/{n}/comments`, and
//! `/repos/{o}/{r}/issues/comments/{id}` to edit one), refused as GitHub refuses them: 404
//! for a pull request the repository does not have, 422 for an empty body or one over 65,536
//! characters, 403 where the token may not write pull requests. `GET
//! /repos/{o}/{r}/pulls/{n}` answers a pull request's `state` and `head`.

use super::*;

/// A pull request as the fake holds it.
#[derive(Clone, Debug)]
pub struct FakePull {
    pub number: u64,
    pub title: String,
    pub head_branch: String,
    pub head_sha: String,
    pub base: String,
    pub author: String,
    /// The fork its head comes from (`owner/name`, id), when it does.
    pub fork: Option<(String, u64)>,
    pub open: bool,
    pub merged: bool,
}

/// A comment on a pull request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeComment {
    pub id: u64,
    pub number: u64,
    pub body: String,
    /// How many times it was edited after it was made.
    pub edits: usize,
}

const MAX_COMMENT_CHARS: usize = 65_536;

impl FakeGitHub {
    /// Opens a pull request from `head_branch` (of the repository itself, or of `fork`) into
    /// the repository's default branch, and delivers `opened`. Returns its number.
    pub async fn open_pull(
        &self,
        owner: &str,
        name: &str,
        head_branch: &str,
        title: &str,
        fork: Option<(&str, u64)>,
    ) -> anyhow::Result<u64> {
        let (id, bare) = self.repo_dir(owner, name)?;
        let head_sha = head(&bare, head_branch).await?;
        let base = git(&bare, &["symbolic-ref", "--short", "HEAD"])
            .await?
            .trim()
            .to_owned();
        let number = {
            let mut state = self.state();
            let number = state.next_id() % 10_000;
            let repo = state.repo_mut(id).context("the repository")?;
            repo.pulls.push(FakePull {
                number,
                title: title.to_owned(),
                head_branch: head_branch.to_owned(),
                head_sha,
                base,
                author: "grace".to_owned(),
                fork: fork.map(|(name, id)| (name.to_owned(), id)),
                open: true,
                merged: false,
            });
            number
        };
        self.deliver_pull(id, number, "opened").await;
        Ok(number)
    }

    /// The pull request's branch moved (a push to it): delivers `synchronize` with its head.
    pub async fn push_to_pull(&self, owner: &str, name: &str, number: u64) -> anyhow::Result<()> {
        let (id, bare) = self.repo_dir(owner, name)?;
        let branch = self.pull(id, number)?.head_branch;
        let sha = head(&bare, &branch).await?;
        self.update_pull(id, number, |pull| pull.head_sha = sha);
        self.deliver_pull(id, number, "synchronize").await;
        Ok(())
    }

    /// Closes the pull request (merged or not) and delivers `closed`.
    pub async fn close_pull(
        &self,
        owner: &str,
        name: &str,
        number: u64,
        merged: bool,
    ) -> anyhow::Result<()> {
        let (id, _) = self.repo_dir(owner, name)?;
        self.update_pull(id, number, |pull| {
            pull.open = false;
            pull.merged = merged;
        });
        self.deliver_pull(id, number, "closed").await;
        Ok(())
    }

    /// An `action` GitHub sent while the pull request was open that arrives only now (GitHub
    /// does not order deliveries): delivered as it was sent, open, whatever the pull request
    /// is now.
    pub async fn deliver_late(
        &self,
        owner: &str,
        name: &str,
        number: u64,
        action: &str,
    ) -> anyhow::Result<()> {
        let (id, _) = self.repo_dir(owner, name)?;
        self.send_pull(id, number, action, true).await;
        Ok(())
    }

    /// The App loses its "Pull requests" permission: reading pull requests and commenting on
    /// them answer 403, as GitHub does.
    pub fn forbid_pulls(&self) {
        self.state().pulls_forbidden = true;
    }

    /// The comments on pull request `number`.
    pub fn comments(&self, owner: &str, name: &str, number: u64) -> Vec<FakeComment> {
        let state = self.state();
        state
            .repos
            .iter()
            .find(|repo| repo.is_named(owner, name))
            .map(|repo| {
                repo.comments
                    .iter()
                    .filter(|comment| comment.number == number)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn repo_dir(&self, owner: &str, name: &str) -> anyhow::Result<(u64, PathBuf)> {
        let state = self.state();
        let repo = state
            .repos
            .iter()
            .find(|repo| repo.is_named(owner, name))
            .context("no such repository")?;
        Ok((repo.id, repo.bare.clone()))
    }

    fn pull(&self, id: u64, number: u64) -> anyhow::Result<FakePull> {
        let state = self.state();
        state
            .repo(id)
            .and_then(|repo| repo.pulls.iter().find(|pull| pull.number == number))
            .cloned()
            .context("no such pull request")
    }

    /// Changes pull request `number` (if the repository has it) under the state's lock.
    fn update_pull(&self, id: u64, number: u64, change: impl FnOnce(&mut FakePull)) {
        let mut state = self.state();
        let pull = state
            .repo_mut(id)
            .and_then(|repo| repo.pulls.iter_mut().find(|pull| pull.number == number));
        if let Some(pull) = pull {
            change(pull);
        }
    }

    /// Sends `action` of pull request `number` to each active hook that hears `pull_request`.
    async fn deliver_pull(&self, id: u64, number: u64, action: &str) {
        self.send_pull(id, number, action, false).await;
    }

    /// `deliver_pull`, describing the pull request as open when `as_open`.
    async fn send_pull(&self, id: u64, number: u64, action: &str, as_open: bool) {
        let outgoing: Vec<Outgoing> = {
            let state = self.state();
            let Some(repo) = state.repo(id) else {
                return;
            };
            let Some(pull) = repo.pulls.iter().find(|pull| pull.number == number) else {
                return;
            };
            let base_repo = repo_json(&state, repo, &pull.base);
            let head_repo = match &pull.fork {
                Some((full_name, fork_id)) => json!({ "id": fork_id, "full_name": full_name }),
                None => base_repo.clone(),
            };
            let payload = json!({
                "action": action,
                "number": pull.number,
                "pull_request": {
                    "number": pull.number,
                    "title": pull.title,
                    "html_url": format!("https://github.com/{}/pull/{}", repo.full_name(), pull.number),
                    "state": if pull.open || as_open { "open" } else { "closed" },
                    "merged": pull.merged && !as_open,
                    "user": { "login": pull.author, "type": "User" },
                    "head": { "ref": pull.head_branch, "sha": pull.head_sha, "repo": head_repo },
                    "base": { "ref": pull.base, "sha": "", "repo": base_repo },
                },
                "repository": base_repo,
                "sender": { "login": pull.author, "type": "User" },
            });
            repo.hooks
                .iter()
                .filter(|hook| hook.active)
                .filter(|hook| hook.events.iter().any(|e| e == "pull_request" || e == "*"))
                .map(|hook| Outgoing {
                    hook: hook.clone(),
                    repo_id: id,
                    event: "pull_request",
                    payload: payload.clone(),
                })
                .collect()
        };
        let records = futures_util::future::join_all(outgoing.iter().map(deliver)).await;
        self.state().deliveries.extend(records);
    }
}

async fn head(bare: &Path, branch: &str) -> anyhow::Result<String> {
    let object = format!("refs/heads/{branch}^{{commit}}");
    Ok(git(bare, &["rev-parse", "--verify", &object])
        .await?
        .trim()
        .to_owned())
}

fn comment_json(state: &State, repo: &Repo, comment: &FakeComment) -> Value {
    let api = state.api.trim_end_matches('/');
    json!({
        "id": comment.id,
        "body": comment.body,
        "user": { "login": "runway[bot]", "type": "Bot" },
        "url": format!("{api}/repos/{}/issues/comments/{}", repo.full_name(), comment.id),
        "html_url": format!("https://github.com/{}/pull/{}#issuecomment-{}", repo.full_name(), comment.number, comment.id),
    })
}

/// The comment text GitHub takes, or the errors of its 422.
fn comment_body(body: &Value) -> Result<String, Value> {
    match body["body"].as_str() {
        Some(text) if !text.trim().is_empty() && text.chars().count() <= MAX_COMMENT_CHARS => {
            Ok(text.to_owned())
        }
        Some(text) if !text.trim().is_empty() => Err(json!([{
            "resource": "IssueComment", "code": "custom", "field": "body",
            "message": "body is too long (maximum is 65536 characters)",
        }])),
        _ => Err(json!([{
            "resource": "IssueComment", "code": "missing_field", "field": "body",
        }])),
    }
}

pub(super) fn is_comments_path(rest: &[&str]) -> bool {
    matches!(rest.first(), Some(&"issues" | &"pulls"))
}

/// `issues/{n}/comments` (GET, POST) and `issues/comments/{id}` (PATCH).
pub(super) async fn comments_route(
    state: &Mutex<State>,
    id: u64,
    rest: &[&str],
    request: Request,
) -> Response {
    if lock(state).pulls_forbidden {
        return error(
            StatusCode::FORBIDDEN,
            "Resource not accessible by integration",
        );
    }
    let method = request.method().clone();
    match (rest, method) {
        (["pulls", number], Method::GET) => {
            let guard = lock(state);
            let pull = number.parse::<u64>().ok().and_then(|number| {
                guard
                    .repo(id)?
                    .pulls
                    .iter()
                    .find(|pull| pull.number == number)
                    .cloned()
            });
            match pull {
                Some(pull) => ok(json!({
                    "number": pull.number,
                    "state": if pull.open { "open" } else { "closed" },
                    "merged": pull.merged,
                    "title": pull.title,
                    "head": { "ref": pull.head_branch, "sha": pull.head_sha },
                    "base": { "ref": pull.base },
                })),
                None => not_found(),
            }
        }
        (["issues", "comments", comment], Method::PATCH) => {
            let Ok(comment) = comment.parse::<u64>() else {
                return not_found();
            };
            let text = match json_body(request).await {
                Ok(body) => match comment_body(&body) {
                    Ok(text) => text,
                    Err(errors) => return validation_failed(errors),
                },
                Err(response) => return response,
            };
            let mut guard = lock(state);
            let Some(repo) = guard.repo_mut(id) else {
                return not_found();
            };
            let Some(found) = repo.comments.iter_mut().find(|c| c.id == comment) else {
                return not_found();
            };
            found.body = text;
            found.edits += 1;
            let found = found.clone();
            let repo = guard.repo(id).expect("the repository");
            ok(comment_json(&guard, repo, &found))
        }
        (["issues", number, "comments"], method) => {
            let Ok(number) = number.parse::<u64>() else {
                return not_found();
            };
            let has_pull = lock(state)
                .repo(id)
                .is_some_and(|repo| repo.pulls.iter().any(|pull| pull.number == number));
            if !has_pull {
                return not_found();
            }
            match method {
                Method::GET => {
                    let guard = lock(state);
                    let repo = guard.repo(id).expect("the repository");
                    let listed: Vec<Value> = repo
                        .comments
                        .iter()
                        .filter(|comment| comment.number == number)
                        .map(|comment| comment_json(&guard, repo, comment))
                        .collect();
                    ok(Value::Array(listed))
                }
                Method::POST => {
                    let text = match json_body(request).await {
                        Ok(body) => match comment_body(&body) {
                            Ok(text) => text,
                            Err(errors) => return validation_failed(errors),
                        },
                        Err(response) => return response,
                    };
                    let mut guard = lock(state);
                    let comment = FakeComment {
                        id: guard.next_id(),
                        number,
                        body: text,
                        edits: 0,
                    };
                    guard
                        .repo_mut(id)
                        .expect("the repository")
                        .comments
                        .push(comment.clone());
                    let repo = guard.repo(id).expect("the repository");
                    respond(
                        StatusCode::CREATED,
                        Some(&comment_json(&guard, repo, &comment)),
                    )
                }
                _ => not_found(),
            }
        }
        _ => not_found(),
    }
}
