//! Serves `github-webhook` on `$PORT` with the embedded adapters (Google Cloud wiring: issue 3).

fn main() -> anyhow::Result<()> {
    runway_shared::local::serve_function("github-webhook", |e| {
        runway_github_webhook::router(runway_github_webhook::State::embedded(e))
    })
}
