//! `runway` starts Runway on this machine; `runway post-receive` is what a repository's git hook
//! runs to deliver a push event; `runway pull-request` opens and closes pull requests on a local
//! repository, whose apps then get previews.

use std::io::Read;

use runway_embedded::{EmbeddedConfig, close_pull, deliver_post_receive, open_pull};
use runway_http::shutdown_signal;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runway_http::telemetry::init();
    match std::env::args().nth(1).as_deref() {
        None | Some("serve") => {
            let config = EmbeddedConfig::from_env()?;
            let listener = tokio::net::TcpListener::bind(config.listen).await?;
            runway_local::run(config, listener, shutdown_signal()).await
        }
        Some("post-receive") => {
            let mut updates = String::new();
            std::io::stdin().read_to_string(&mut updates)?;
            let git_dir = std::env::var("GIT_DIR").unwrap_or_else(|_| ".".into());
            deliver_post_receive(&std::fs::canonicalize(git_dir)?, &updates).await
        }
        Some("pull-request") => pull_request(std::env::args().skip(2).collect()).await,
        Some(other) => {
            eprintln!(
                "usage: runway [serve | post-receive | pull-request]   (unknown command: {other})"
            );
            std::process::exit(2);
        }
    }
}

const PULL_USAGE: &str = "usage: runway pull-request open GIT_DIR BRANCH [TITLE]\n       \
                          runway pull-request close GIT_DIR NUMBER [--merged]";

/// `runway pull-request open GIT_DIR BRANCH [TITLE]` prints the new pull request's number;
/// `runway pull-request close GIT_DIR NUMBER [--merged]` closes one.
async fn pull_request(args: Vec<String>) -> anyhow::Result<()> {
    let author = std::env::var("USER").unwrap_or_else(|_| "local".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["open", git_dir, branch, rest @ ..] if rest.len() <= 1 => {
            let title = rest.first().copied().unwrap_or(branch);
            let git_dir = std::fs::canonicalize(git_dir)?;
            let number = open_pull(&git_dir, branch, title, &author).await?;
            println!("{number}");
            Ok(())
        }
        ["close", git_dir, number, rest @ ..] if rest.is_empty() || rest == ["--merged"] => {
            let number: u64 = number
                .parse()
                .map_err(|_| anyhow::anyhow!("{number} is not a pull request's number"))?;
            let git_dir = std::fs::canonicalize(git_dir)?;
            close_pull(&git_dir, number, !rest.is_empty(), &author).await
        }
        _ => {
            eprintln!("{PULL_USAGE}");
            std::process::exit(2);
        }
    }
}
