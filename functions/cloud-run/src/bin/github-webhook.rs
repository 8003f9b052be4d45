//! `github-webhook`: GitHub push events in, on `$PORT`, with the adapters `RUNWAY_BACKEND` picks (`gcp` on
//! Cloud Run, `embedded` by default).

use runway_github_webhook::{NEEDS, State, router};

fn main() -> std::process::ExitCode {
    runway_wiring::serve("github-webhook", NEEDS, |adapters| {
        Ok(router(State::new(adapters)?))
    })
}
