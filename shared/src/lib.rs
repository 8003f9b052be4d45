//! Runway's shared crate: the domain (pure values and records), the ports every adapter
//! implements, the embedded adapters that run with no cloud, and the HTTP plumbing the five
//! functions share.

pub mod config;
pub mod domain;
pub mod function;
pub mod gcp;
pub mod github;
pub mod http;
pub mod local;
pub mod ports;
pub mod pubsub;
pub mod releases;
pub mod telemetry;
pub mod webhook;
