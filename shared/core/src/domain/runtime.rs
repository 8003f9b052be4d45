//! What an app runs with besides its code and its secrets: plain environment variables, and how
//! many instances Cloud Run keeps warm.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::values::{FieldError, Resources, shown};

/// An app's plain environment variables, by name. Plain: stored with the app, shown on its
/// page, set on the revision in the open. Names that look like they hold a secret are refused
/// (secrets go in the app's secrets TOML, which only Secret Manager keeps).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<String, String>",
    into = "BTreeMap<String, String>"
)]
pub struct EnvVars(BTreeMap<String, String>);

impl EnvVars {
    /// Cloud Run takes 1,000; a page of settings stays readable with far fewer.
    pub const MAX_VARS: usize = 100;
    /// Every name and value together: Cloud Run's limit on a container's variables is 32 KiB.
    pub const MAX_BYTES: usize = 32 * 1024;
    /// Set by Cloud Run or by Runway, so an app may not set them.
    const RESERVED: [&str; 5] = [
        "PORT",
        "K_SERVICE",
        "K_REVISION",
        "K_CONFIGURATION",
        "STREAMLIT_SECRETS_FILES",
    ];
    /// Words (between underscores) that say a variable holds a secret.
    const SECRET_WORDS: [&str; 8] = [
        "SECRET",
        "SECRETS",
        "TOKEN",
        "PASSWORD",
        "PASSWD",
        "CREDENTIALS",
        "APIKEY",
        "PRIVATE",
    ];

    /// `NAME=value` lines, as the form's field holds them: blank lines and `#` comments are
    /// skipped; a value is what follows the first `=`, without the spaces around it (an API
    /// client that needs them sends an object).
    pub fn parse_lines(text: &str) -> Result<Self, FieldError> {
        let mut vars = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let trimmed = line.trim_start();
            if trimmed.trim().is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let Some((name, value)) = trimmed.split_once('=') else {
                return Err(FieldError::new(
                    "env",
                    format!(
                        "line {} is not NAME=value (got {})",
                        number + 1,
                        shown(trimmed)
                    ),
                ));
            };
            vars.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        Self::new(vars)
    }

    /// Checks every name and the whole: each name once, as a shell would take it, not reserved
    /// and not a secret's.
    pub fn new(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, FieldError> {
        let mut checked = BTreeMap::new();
        let mut bytes = 0;
        for (name, value) in vars {
            check_name(&name)?;
            if value.contains('\0') {
                return Err(FieldError::new(
                    "env",
                    format!("the value of {name} contains a NUL character"),
                ));
            }
            bytes += name.len() + value.len();
            if checked.insert(name.clone(), value).is_some() {
                return Err(FieldError::new("env", format!("{name} is set twice")));
            }
        }
        if checked.len() > Self::MAX_VARS {
            return Err(FieldError::new(
                "env",
                format!(
                    "at most {} variables (got {})",
                    Self::MAX_VARS,
                    checked.len()
                ),
            ));
        }
        if bytes > Self::MAX_BYTES {
            return Err(FieldError::new(
                "env",
                format!(
                    "the variables come to {bytes} bytes; Cloud Run takes at most {}",
                    Self::MAX_BYTES
                ),
            ));
        }
        Ok(Self(checked))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `NAME=value` lines, as [`parse_lines`](Self::parse_lines) reads them.
    pub fn to_lines(&self) -> String {
        self.iter()
            .map(|(name, value)| format!("{name}={value}\n"))
            .collect()
    }
}

fn check_name(name: &str) -> Result<(), FieldError> {
    let valid = name
        .chars()
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 255;
    if !valid {
        return Err(FieldError::new(
            "env",
            format!(
                "{} is not a variable name: letters, digits and '_', not starting with a digit",
                shown(name)
            ),
        ));
    }
    let upper = name.to_ascii_uppercase();
    if EnvVars::RESERVED.contains(&upper.as_str())
        || upper.starts_with("RUNWAY_")
        || upper.starts_with("X_GOOGLE_")
    {
        return Err(FieldError::new(
            "env",
            format!("{name} is set by Cloud Run or Runway; choose another name"),
        ));
    }
    let secret_like = upper
        .split('_')
        .any(|word| EnvVars::SECRET_WORDS.contains(&word))
        || upper.ends_with("_KEY")
        || upper == "KEY";
    if secret_like {
        return Err(FieldError::new(
            "env",
            format!(
                "{name} looks like it holds a secret: put it in the app's secrets (TOML), which \
                 only Secret Manager keeps and the app reads as st.secrets. Plain variables are \
                 stored with the app and shown on its page"
            ),
        ));
    }
    Ok(())
}

impl TryFrom<BTreeMap<String, String>> for EnvVars {
    type Error = FieldError;

    fn try_from(vars: BTreeMap<String, String>) -> Result<Self, FieldError> {
        Self::new(vars)
    }
}

impl From<EnvVars> for BTreeMap<String, String> {
    fn from(vars: EnvVars) -> Self {
        vars.0
    }
}

/// How many instances Cloud Run keeps running while nobody uses the app, so the next visitor
/// does not wait for a cold start. Each one costs money all month (`monthly_cost`). Locally an
/// app is one process that always runs; the setting is kept for Cloud Run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct MinInstances(u32);

impl MinInstances {
    /// A cost guard: warm instances are billed every second of the month.
    pub const MAX: u32 = 3;

    pub fn new(count: u32) -> Result<Self, FieldError> {
        if count > Self::MAX {
            return Err(FieldError::new(
                "min_instances",
                format!(
                    "must be 0 to {} (got {count}): each warm instance is billed all month",
                    Self::MAX
                ),
            ));
        }
        Ok(Self(count))
    }

    pub fn parse(input: &str) -> Result<Self, FieldError> {
        let count = input.trim().parse::<u32>().map_err(|_| {
            FieldError::new(
                "min_instances",
                format!(
                    "must be a whole number from 0 to {} (got {})",
                    Self::MAX,
                    shown(input)
                ),
            )
        })?;
        Self::new(count)
    }

    pub fn count(self) -> u32 {
        self.0
    }

    /// What keeping them warm costs a month in US dollars, at Cloud Run's Tier 1 list prices
    /// for an idle minimum instance with CPU allocated only during requests (per second:
    /// $0.0000025 a vCPU, $0.0000025 a GiB), over a 730-hour month. An instance that serves
    /// is billed at the active rate instead, as any instance is.
    pub fn monthly_cost(self, resources: Resources) -> f64 {
        let cpu = f64::from(resources.cpu().count()) * Self::IDLE_VCPU_SECOND;
        let memory = f64::from(resources.memory().mebibytes()) / 1024.0 * Self::IDLE_GIB_SECOND;
        f64::from(self.0) * (cpu + memory) * Self::MONTH_SECONDS
    }

    /// Cloud Run's Tier 1 list price of an idle minimum instance's vCPU-second, in US dollars
    /// (CPU allocated only during requests).
    pub const IDLE_VCPU_SECOND: f64 = 0.000_002_5;
    /// … and of its memory's GiB-second.
    pub const IDLE_GIB_SECOND: f64 = 0.000_002_5;
    /// A month of 730 hours.
    pub const MONTH_SECONDS: f64 = 730.0 * 3600.0;

    /// The cost, said for the form: "Keeping 1 instance warm costs about $9.86 a month …".
    pub fn describe_cost(self, resources: Resources) -> String {
        match self.0 {
            0 => "No instance is kept warm: the app costs nothing while nobody uses it, and \
                  the first visit after a quiet spell waits for it to start."
                .to_owned(),
            count => format!(
                "Keeping {count} instance{} warm costs about ${:.2} a month with these CPUs and \
                 memory (Cloud Run's idle rate, Tier 1 list price), on top of what serving \
                 visitors costs.",
                if count == 1 { "" } else { "s" },
                self.monthly_cost(resources)
            ),
        }
    }
}

impl TryFrom<u32> for MinInstances {
    type Error = FieldError;

    fn try_from(count: u32) -> Result<Self, FieldError> {
        Self::new(count)
    }
}

impl From<MinInstances> for u32 {
    fn from(min: MinInstances) -> Self {
        min.0
    }
}

/// An app's run settings beyond resources and region.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runtime {
    #[serde(default, skip_serializing_if = "EnvVars::is_empty")]
    pub env: EnvVars,
    #[serde(default)]
    pub min_instances: MinInstances,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Cpu, Memory};

    #[test]
    fn reads_name_value_lines_keeping_what_follows_the_first_equals_sign() {
        let vars =
            EnvVars::parse_lines("# the model\nMODEL_NAME = gpt-small\n\n  MODE=a=b \nEMPTY=\n")
                .unwrap();
        let listed: Vec<(&str, &str)> = vars.iter().collect();
        assert_eq!(
            listed,
            [("EMPTY", ""), ("MODE", "a=b"), ("MODEL_NAME", "gpt-small")]
        );
        assert_eq!(EnvVars::parse_lines(&vars.to_lines()).unwrap(), vars);
    }

    #[test]
    fn refuses_what_is_no_name_set_twice_or_reserved() {
        for (text, says) in [
            ("JUST_A_NAME", "not NAME=value"),
            ("1ST=x", "not a variable name"),
            ("A-B=x", "not a variable name"),
            ("A=1\nA=2", "set twice"),
            ("PORT=9000", "set by Cloud Run or Runway"),
            ("RUNWAY_ANYTHING=1", "set by Cloud Run or Runway"),
            ("STREAMLIT_SECRETS_FILES=/x", "set by Cloud Run or Runway"),
        ] {
            let error = EnvVars::parse_lines(text).unwrap_err();
            assert_eq!(error.field, "env");
            assert!(error.message.contains(says), "{text}: {}", error.message);
        }
    }

    #[test]
    fn a_name_that_looks_like_a_secret_is_sent_to_the_secrets() {
        for name in [
            "OPENAI_API_KEY",
            "DB_PASSWORD",
            "GITHUB_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "key",
        ] {
            let error = EnvVars::parse_lines(&format!("{name}=x")).unwrap_err();
            assert!(error.message.contains("st.secrets"), "{name}");
        }
        for plain in ["KEYWORDS", "MONKEY_MODE", "TOKENIZER_MODEL", "LOG_LEVEL"] {
            assert!(
                EnvVars::parse_lines(&format!("{plain}=x")).is_ok(),
                "{plain}"
            );
        }
    }

    #[test]
    fn refuses_more_than_cloud_run_takes() {
        let many: String = (0..=EnvVars::MAX_VARS)
            .map(|i| format!("V{i}=x\n"))
            .collect();
        assert!(EnvVars::parse_lines(&many).is_err());
        let big = format!("BIG={}", "x".repeat(EnvVars::MAX_BYTES));
        assert!(
            EnvVars::parse_lines(&big)
                .unwrap_err()
                .message
                .contains("bytes")
        );
    }

    #[test]
    fn min_instances_are_bounded_and_priced() {
        assert!(MinInstances::parse("4").is_err());
        assert!(MinInstances::parse("-1").is_err());
        assert!(MinInstances::parse("two").is_err());
        let one = MinInstances::parse("1").unwrap();
        let small = Resources::new(Memory::Mi512, Cpu::One).unwrap();
        // 1 vCPU and 0.5 GiB idle for 730 hours: (2.5e-6 + 1.25e-6) × 2,628,000 s.
        assert!((one.monthly_cost(small) - 9.855).abs() < 0.001);
        assert_eq!(MinInstances::default().monthly_cost(small), 0.0);
        let two = MinInstances::new(2).unwrap();
        assert!((two.monthly_cost(small) - 2.0 * 9.855).abs() < 0.001);
    }
}
