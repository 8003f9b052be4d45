//! `submit`: the form and the deploy API, on `$PORT`, with the adapters `RUNWAY_BACKEND` picks (`gcp` on
//! Cloud Run, `embedded` by default).

use runway_submit::{NEEDS, State, router};

fn main() -> std::process::ExitCode {
    runway_wiring::serve("submit", NEEDS, |adapters| {
        Ok(router(State::new(adapters)?))
    })
}
