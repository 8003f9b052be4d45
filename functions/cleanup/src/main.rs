//! Serves `cleanup` on `$PORT` with the embedded adapters (Google Cloud wiring: issue 3).

fn main() -> anyhow::Result<()> {
    runway_shared::local::serve_function("cleanup", |e| {
        runway_cleanup::router(runway_cleanup::State::embedded(e))
    })
}
