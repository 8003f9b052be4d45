//! `cleanup`: the sweeps Cloud Scheduler calls, on `$PORT`, with the adapters `RUNWAY_BACKEND` picks
//! (`gcp` on Cloud Run, `embedded` by default).

use runway_cleanup::{State, router};

fn main() -> std::process::ExitCode {
    runway_shared::function::serve_state("cleanup", State::embedded, State::cloud, router)
}
