//! The Google Cloud side: the Cloud Build, Cloud Run and Cloud Logging adapters against their fakes, the
//! function binaries as Cloud Run runs them, and the production topology end to end on the
//! emulators and the fakes.

mod cloud_build;
mod cloud_logging;
mod cloud_run;
mod functions;
mod production;
mod production_browser;
mod production_faults;
