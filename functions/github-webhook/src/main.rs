//! `github-webhook`: GitHub push events in, on `$PORT`, with the adapters `RUNWAY_BACKEND` picks
//! (`gcp` on Cloud Run, `embedded` by default).

use runway_github_webhook::{State, router};

fn main() -> std::process::ExitCode {
    runway_shared::function::serve_state("github-webhook", State::embedded, State::cloud, router)
}
