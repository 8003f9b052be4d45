//! `cleanup`: the sweeps Cloud Scheduler calls, on `$PORT`, with the adapters `RUNWAY_BACKEND` picks (`gcp` on
//! Cloud Run, `embedded` by default).

use runway_cleanup::{NEEDS, State, router};

fn main() -> std::process::ExitCode {
    runway_wiring::serve("cleanup", NEEDS, |adapters| {
        Ok(router(State::new(adapters)?))
    })
}
