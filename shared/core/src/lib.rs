//! Runway's core: the domain (values parsed once at the edge, records, the release state
//! machine), the ports every adapter implements, the use cases the functions share, and the
//! set of adapters a function is handed. No adapter, no server, no network: every other crate
//! depends on this one, and this one on none of them.

pub mod adapters;
pub mod clock;
pub mod config;
pub mod deployments;
pub mod domain;
pub mod feedback;
pub mod install;
pub mod limits;
pub mod messages;
pub mod notify;
pub mod plan;
pub mod ports;
pub mod python;
pub mod releases;
pub mod removal;
pub mod text;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use adapters::{Adapters, HookSweep, Keeping, Need, Timeouts, Unwired};
