//! Typed configuration read from the environment, failing fast with the variable's name.

use std::str::FromStr;

use crate::domain::{Access, RepoAllowlist};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name} is not valid: {message}")]
    Invalid { name: &'static str, message: String },
    /// Everything wrong with a function's environment at once, so one restart fixes it.
    #[error("{what} cannot start: {}", .problems.join("; "))]
    Several { what: String, problems: Vec<String> },
}

/// Reads a function's environment, noting every missing or invalid variable instead of
/// stopping at the first; `finish` reports them all.
#[derive(Debug, Default)]
pub struct Env {
    problems: Vec<String>,
}

impl Env {
    pub fn new() -> Self {
        Self::default()
    }

    /// The variable's value; a missing one is noted (and `""` returned in its place).
    pub fn required(&mut self, name: &'static str) -> String {
        var(name).unwrap_or_else(|error| {
            self.problems.push(error.to_string());
            String::new()
        })
    }

    pub fn optional(&self, name: &'static str) -> Option<String> {
        var(name).ok()
    }

    pub fn or(&self, name: &'static str, default: &str) -> String {
        var_or(name, default)
    }

    pub fn list(&self, name: &'static str, default: &str) -> Vec<String> {
        list_or(name, default)
    }

    /// Parses the variable, or `default` when unset; an invalid value is noted (and `default`
    /// returned in its place).
    pub fn parse_or<T: FromStr + Clone>(&mut self, name: &'static str, default: T) -> T
    where
        T::Err: std::fmt::Display,
    {
        parse_or(name, default.clone()).unwrap_or_else(|error| {
            self.problems.push(error.to_string());
            default
        })
    }

    /// Notes a problem found by the caller (e.g. two variables that exclude each other).
    pub fn problem(&mut self, problem: impl Into<String>) {
        self.problems.push(problem.into());
    }

    /// `Ok` when everything needed was there; otherwise one error naming every problem.
    pub fn finish(self, what: &str) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Several {
                what: what.to_owned(),
                problems: self.problems,
            })
        }
    }
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
    /// App names may not start with it: Runway's own services are named so (`runway-submit`).
    pub reserved_prefix: String,
    /// Who may open an app whose submit does not say: the operator's choice, made once.
    pub default_access: Access,
    /// Which GitHub repositories may be deployed; `None`: any (the laptop's own Runway).
    pub allowed_repos: Option<RepoAllowlist>,
}
