//! Pure domain types: parsed once at the edge, no I/O.

mod access;
mod ids;
mod records;
mod values;

pub use access::*;
pub use ids::*;
pub use records::*;
pub use values::*;
