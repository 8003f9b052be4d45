//! Pure domain types: parsed once at the edge, no I/O.

mod ids;
mod records;
mod values;

pub use ids::*;
pub use records::*;
pub use values::*;
