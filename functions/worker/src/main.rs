//! `worker`: Pub/Sub push endpoints that build and deploy, on `$PORT`, with the adapters `RUNWAY_BACKEND` picks
//! (`gcp` on Cloud Run, `embedded` by default).

use runway_worker::{State, router};

fn main() -> std::process::ExitCode {
    runway_shared::function::serve_state("worker", State::embedded, State::cloud, router)
}
