//! Typed configuration read from the environment, failing fast with the variable's name.

use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name} is not valid: {message}")]
    Invalid { name: &'static str, message: String },
}

/// The variable's value, or `default` when unset or empty.
pub fn var_or(name: &'static str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

pub fn var(name: &'static str) -> Result<String, ConfigError> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.is_empty())
        .ok_or(ConfigError::Missing(name))
}

/// Parses the variable, or returns `default` when unset.
pub fn parse_or<T: FromStr>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name).ok().filter(|value| !value.is_empty()) {
        None => Ok(default),
        Some(value) => value.parse().map_err(|error: T::Err| ConfigError::Invalid {
            name,
            message: error.to_string(),
        }),
    }
}

/// A comma-separated list.
pub fn list_or(name: &'static str, default: &str) -> Vec<String> {
    var_or(name, default)
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// What the API accepts from users; the same on every adapter.
#[derive(Clone, Debug)]
pub struct Policy {
    pub allowed_regions: Vec<String>,
    pub default_region: String,
    /// Local mode also deploys from `file://` URLs and paths of local git repositories.
    pub allow_local_repos: bool,
}
