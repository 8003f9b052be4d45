//! `submit`: the form and the deploy API, on `$PORT`, with the adapters `RUNWAY_BACKEND` picks
//! (`gcp` on Cloud Run, `embedded` by default).

use runway_submit::{State, router};

fn main() -> std::process::ExitCode {
    runway_shared::function::serve_state("submit", State::embedded, State::cloud, router)
}
