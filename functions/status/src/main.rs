//! Serves `status` on `$PORT` with the embedded adapters (Google Cloud wiring: issue 3).

fn main() -> anyhow::Result<()> {
    runway_shared::local::serve_function("status", |e| {
        runway_status::router(runway_status::State::embedded(e))
    })
}
