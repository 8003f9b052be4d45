//! `runway` starts Runway on this machine; `runway post-receive` is what a repository's git hook
//! runs to deliver a push event.

use std::io::Read;

use runway_embedded::{EmbeddedConfig, deliver_post_receive};
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
        Some(other) => {
            eprintln!("usage: runway [serve | post-receive]   (unknown command: {other})");
            std::process::exit(2);
        }
    }
}
