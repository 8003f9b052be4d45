//! `submit`: the form and the deploy API, on `$PORT`, with the adapters `RUNWAY_BACKEND` picks
//! (`gcp` on Cloud Run, `embedded` by default).

use runway_shared::function::{self, Backend, Service, embedded_probes};
use runway_submit::{State, router};

fn main() -> std::process::ExitCode {
    function::serve("submit", async |backend| {
        let (state, probes) = match backend {
            Backend::Embedded(e) => (State::embedded(e), embedded_probes(e)),
            Backend::Gcp(env) => State::cloud(env).await?,
        };
        Ok(Service {
            router: router(state),
            probes,
        })
    })
}
