//! `status`: deployments, releases, build logs and the audit trail, on `$PORT`, with the adapters `RUNWAY_BACKEND` picks (`gcp` on
//! Cloud Run, `embedded` by default).

use runway_status::{NEEDS, State, router};

fn main() -> std::process::ExitCode {
    runway_wiring::serve("status", NEEDS, |adapters| {
        Ok(router(State::new(adapters)?))
    })
}
