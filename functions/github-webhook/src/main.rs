//! `github-webhook`: GitHub push events in, on `$PORT`, with the adapters `RUNWAY_BACKEND` picks
//! (`gcp` on Cloud Run, `embedded` by default).

use runway_github_webhook::{State, router};
use runway_shared::function::{self, Backend, Service, embedded_probes};

fn main() -> std::process::ExitCode {
    function::serve("github-webhook", async |backend| {
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
