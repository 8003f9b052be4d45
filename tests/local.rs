//! The real `runway` binary on this machine: real git repositories, real uv builds, real
//! Streamlit processes behind the proxy, and a real browser.

mod api;
mod browser;
mod end_to_end;
mod faults;
mod rollback;
mod supervision;
