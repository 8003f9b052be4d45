//! The ports: what Runway needs from the world, as traits. Each has a Google Cloud (or GitHub)
//! adapter and an embedded one; ports speak domain types, never documents or messages.

mod forge;
mod hook_sources;
mod identity;
mod image_builder;
mod platform;
mod queue;
mod runtime_log;
mod secret_store;
mod store;

pub use forge::*;
pub use hook_sources::*;
pub use identity::*;
pub use image_builder::*;
pub use platform::*;
pub use queue::*;
pub use runtime_log::*;
pub use secret_store::*;
pub use store::*;
