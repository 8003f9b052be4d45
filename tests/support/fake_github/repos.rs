//! The repositories behind the fake GitHub: real bare git repositories, read for branches and
//! served as archives by the fake codeload (another origin, as codeload.github.com is).

use super::*;

pub(super) fn bare_path(state: &Mutex<State>, id: u64) -> Option<PathBuf> {
    lock(state).repo(id).map(|repo| repo.bare.clone())
}

/// The repository's default branch, as `git symbolic-ref HEAD` of its bare repository names it.
pub(super) async fn default_branch(state: &Mutex<State>, id: u64) -> Option<String> {
    let bare = bare_path(state, id)?;
    let head = git(&bare, &["symbolic-ref", "--short", "HEAD"])
        .await
        .ok()?;
    Some(head.trim().to_owned())
}

pub(super) async fn get_repo(state: &Mutex<State>, id: u64) -> Response {
    if bare_path(state, id).is_none() {
        return not_found();
    }
    let Some(default_branch) = default_branch(state, id).await else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "Server Error");
    };
    let state = lock(state);
    match state.repo(id) {
        Some(repo) => ok(repo_json(&state, repo, &default_branch)),
        None => not_found(),
    }
}

pub(super) async fn get_branch(state: &Mutex<State>, id: u64, branch: &str) -> Response {
    let Some(bare) = bare_path(state, id) else {
        return not_found();
    };
    let reference = format!("refs/heads/{branch}");
    let Ok(sha) = git(&bare, &["rev-parse", "--verify", "--quiet", &reference]).await else {
        return error(StatusCode::NOT_FOUND, "Branch not found");
    };
    let sha = sha.trim();
    let state = lock(state);
    let Some(repo) = state.repo(id) else {
        return not_found();
    };
    let api = format!("{}repos/{}", state.api, repo.full_name());
    ok(json!({
        "name": branch,
        "commit": {
            "sha": sha,
            "url": format!("{api}/commits/{sha}"),
            "commit": { "tree": { "sha": null } },
        },
        "_links": {
            "self": format!("{api}/branches/{branch}"),
            "html": format!("https://github.com/{}/tree/{branch}", repo.full_name()),
        },
        "protected": false,
        "protection": { "enabled": false },
        "protection_url": format!("{api}/branches/{branch}/protection"),
    }))
}

/// "List branches": `[{name, commit: {sha, url}, protected}]` in name order, a page at a time
/// (`per_page`, default 30 and at most 100, and `page`), as GitHub lists them.
pub(super) async fn list_branches(state: &Mutex<State>, id: u64, query: Option<&str>) -> Response {
    let Some(bare) = bare_path(state, id) else {
        return not_found();
    };
    let Ok(listing) = git(
        &bare,
        &[
            "for-each-ref",
            "--sort=refname",
            "--format=%(refname:short) %(objectname)",
            "refs/heads",
        ],
    )
    .await
    else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "Server Error");
    };
    let params: HashMap<String, String> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let per_page = params
        .get("per_page")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page = params
        .get("page")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let state = lock(state);
    let Some(repo) = state.repo(id) else {
        return not_found();
    };
    let api = format!("{}repos/{}", state.api, repo.full_name());
    let branches: Vec<Value> = listing
        .lines()
        .filter_map(|line| line.split_once(' '))
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|(name, sha)| {
            json!({
                "name": name,
                "commit": { "sha": sha, "url": format!("{api}/commits/{sha}") },
                "protected": false,
            })
        })
        .collect();
    ok(Value::Array(branches))
}

/// "Get repository content": a file is `{type: "file", name, path, sha, size, encoding:
/// "base64", content}` at `ref` (default: the default branch); a folder is the list of its
/// entries; a path not in the tree is 404 "Not Found".
pub(super) async fn get_contents(
    state: &Mutex<State>,
    id: u64,
    path: &str,
    query: Option<&str>,
) -> Response {
    let Some(bare) = bare_path(state, id) else {
        return not_found();
    };
    let reference = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(name, _)| name == "ref")
        .map_or_else(|| "HEAD".to_owned(), |(_, value)| value.into_owned());
    let object = format!("{reference}:{path}");
    let Ok(kind) = git(&bare, &["cat-file", "-t", &object]).await else {
        return not_found();
    };
    let name = path.rsplit('/').next().unwrap_or(path);
    match kind.trim() {
        "blob" => {
            let (Ok(sha), Ok(content)) = (
                git(&bare, &["rev-parse", &object]).await,
                git(&bare, &["cat-file", "blob", &object]).await,
            ) else {
                return error(StatusCode::INTERNAL_SERVER_ERROR, "Server Error");
            };
            ok(json!({
                "type": "file", "name": name, "path": path, "sha": sha.trim(),
                "size": content.len(), "encoding": "base64",
                "content": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &content),
            }))
        }
        "tree" => {
            let Ok(entries) = git(&bare, &["ls-tree", "--name-only", &object]).await else {
                return error(StatusCode::INTERNAL_SERVER_ERROR, "Server Error");
            };
            ok(Value::Array(
                entries
                    .lines()
                    .map(|entry| json!({ "name": entry, "path": format!("{path}/{entry}") }))
                    .collect(),
            ))
        }
        _ => not_found(),
    }
}

/// "Download a repository archive (tar)": 302 to codeload with a short-lived token in the URL,
/// as GitHub does for private repositories; the default branch when no ref is given.
pub(super) async fn tarball(state: &Mutex<State>, id: u64, reference: &str) -> Response {
    let Some(bare) = bare_path(state, id) else {
        return not_found();
    };
    let reference = if reference.is_empty() {
        "HEAD"
    } else {
        reference
    };
    if reference.starts_with('-') {
        return not_found();
    }
    let spec = format!("{reference}^{{commit}}");
    let Ok(sha) = git(&bare, &["rev-parse", "--verify", "--quiet", &spec]).await else {
        return not_found();
    };
    let mut state = lock(state);
    let Some(repo) = state.repo(id) else {
        return not_found();
    };
    let (owner, name) = (repo.owner.clone(), repo.name.clone());
    let token = uuid::Uuid::new_v4().simple().to_string();
    let location = format!(
        "{}{owner}/{name}/legacy.tar.gz/{reference}?token={token}",
        state.codeload
    );
    state.downloads.insert(token, (id, sha.trim().to_owned()));
    redirect(StatusCode::FOUND, &location)
}

/// codeload: `git archive` of the commit the API named, under GitHub's `OWNER-REPO-SHA7/`.
pub(super) async fn serve_codeload(state: &Mutex<State>, request: Request) -> Response {
    let token = request
        .uri()
        .query()
        .and_then(|query| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(key, _)| key == "token")
                .map(|(_, value)| value.into_owned())
        })
        .unwrap_or_default();
    let download = {
        let mut state = lock(state);
        state.codeload_requests += 1;
        if request.headers().contains_key(header::AUTHORIZATION) {
            state.codeload_with_authorization += 1;
        }
        let query = request.uri().query().unwrap_or_default();
        if state.codeload_hops_once && !query.contains("hop=1") {
            let again = format!("{}?{query}&hop=1", request.uri().path());
            return redirect(StatusCode::FOUND, &again);
        }
        let download = state.downloads.get(&token).cloned();
        download.and_then(|(id, sha)| {
            let repo = state.repo(id)?;
            Some((
                repo.bare.clone(),
                repo.owner.clone(),
                repo.name.clone(),
                sha,
            ))
        })
    };
    let Some((bare, owner, name, sha)) = download else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let prefix = format!("--prefix={owner}-{name}-{}/", &sha[..7]);
    let archive = tokio::process::Command::new("git")
        .arg("-C")
        .arg(&bare)
        .args(["archive", "--format=tar.gz", &prefix, &sha])
        .env_remove("GIT_DIR")
        .output()
        .await;
    match archive {
        Ok(output) if output.status.success() => {
            let mut response = http::Response::new(full(output.stdout));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-gzip"),
            );
            if let Ok(value) = HeaderValue::from_str(&format!(
                "attachment; filename={owner}-{name}-{}.tar.gz",
                &sha[..7]
            )) {
                headers.insert(header::CONTENT_DISPOSITION, value);
            }
            response
        }
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, "Server Error"),
    }
}

pub(super) async fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = tokio::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env_remove("GIT_DIR")
        .output()
        .await
        .context("running git")?;
    anyhow::ensure!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
