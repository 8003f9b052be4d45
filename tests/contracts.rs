//! Every port's contract, written once and run against each of its adapters: the embedded one
//! and the Google Cloud (or GitHub) one, on the emulators and the fakes.

mod contract_forge;
mod contract_hook_sources;
mod contract_identity;
mod contract_image_builder;
mod contract_platform;
mod contract_queue;
mod contract_secrets;
mod contract_store;
