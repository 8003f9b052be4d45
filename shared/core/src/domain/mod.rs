//! Pure domain types: parsed once at the edge, no I/O.

mod access;
mod allowlist;
mod ids;
mod notify;
mod records;
mod runtime;
mod values;

pub use access::*;
pub use allowlist::*;
pub use ids::*;
pub use notify::*;
pub use records::*;
pub use runtime::*;
pub use values::*;
