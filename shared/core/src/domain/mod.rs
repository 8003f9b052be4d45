//! Pure domain types: parsed once at the edge, no I/O.

mod records;
mod values;

pub use records::*;
pub use values::*;
