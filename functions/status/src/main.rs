//! `status`: deployments, releases, build logs and the audit trail, on `$PORT`, with the adapters `RUNWAY_BACKEND` picks
//! (`gcp` on Cloud Run, `embedded` by default).

use runway_status::{State, router};

fn main() -> std::process::ExitCode {
    runway_shared::function::serve_state("status", State::embedded, State::cloud, router)
}
