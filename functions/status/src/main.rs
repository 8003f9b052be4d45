//! `status`: deployments, releases, build logs and the audit trail, on `$PORT`, with the adapters `RUNWAY_BACKEND` picks
//! (`gcp` on Cloud Run, `embedded` by default).

use runway_shared::function::{self, Backend, Service, embedded_probes};
use runway_status::{State, router};

fn main() -> std::process::ExitCode {
    function::serve("status", async |backend| {
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
