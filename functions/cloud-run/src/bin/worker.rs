//! `worker`: Pub/Sub push endpoints that build and deploy, on `$PORT`, with the adapters `RUNWAY_BACKEND` picks (`gcp` on
//! Cloud Run, `embedded` by default).

use runway_worker::{NEEDS, State, router};

fn main() -> std::process::ExitCode {
    runway_wiring::serve("worker", NEEDS, |adapters| {
        Ok(router(State::new(adapters)?))
    })
}
