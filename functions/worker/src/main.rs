//! Serves `worker` on `$PORT` with the embedded adapters (Google Cloud wiring: issue 3).

fn main() -> anyhow::Result<()> {
    runway_shared::local::serve_function("worker", |e| {
        runway_worker::router(runway_worker::State::embedded(e))
    })
}
