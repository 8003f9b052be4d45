//! Serves `submit` on `$PORT` with the embedded adapters (Google Cloud wiring: issue 3).

fn main() -> anyhow::Result<()> {
    runway_shared::local::serve_function("submit", |e| {
        runway_submit::router(runway_submit::State::embedded(e))
    })
}
