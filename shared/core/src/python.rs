//! Which Python an app asks for: `.python-version`, else `runtime.txt`, else the
//! `requires-python` of the `pyproject.toml` its dependencies come from, each looked for from the
//! main file's folder up to the root. Both builders follow the one answer: the local one has uv
//! find (or, where allowed, fetch) that interpreter; the generated Dockerfile takes the pinned
//! base image of that version. A version Runway does not run is a failed release that says so.

/// The Python minor versions (3.x) Runway runs apps on, oldest first; Streamlit supports them.
pub const SUPPORTED: [u8; 4] = [10, 11, 12, 13];
/// What an app that asks for nothing gets: the version of Runway's pinned base image.
pub const DEFAULT: u8 = 12;

/// What an app asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PythonRequest {
    /// Nothing: the default.
    #[default]
    Default,
    /// Python 3.`minor`, as `from` (a file's path) says.
    Version { minor: u8, from: String },
    /// Something Runway cannot run, in the app's own words.
    Unsupported { asked: String, from: String },
}

impl PythonRequest {
    /// The minor version to run, or why there is none.
    pub fn minor(&self) -> Result<u8, String> {
        match self {
            Self::Default => Ok(DEFAULT),
            Self::Version { minor, .. } => Ok(*minor),
            Self::Unsupported { asked, from } => Err(format!(
                "{from} asks for Python {asked}, which Runway does not run apps on: choose one of \
                 {}",
                SUPPORTED.map(|minor| format!("3.{minor}")).join(", ")
            )),
        }
    }

    /// Reads the request from the text of `.python-version`, `runtime.txt` or a `pyproject.toml`
    /// (each `None` when absent), found at the paths given with them.
    pub fn from_files(
        python_version: Option<(&str, &str)>,
        runtime_txt: Option<(&str, &str)>,
        pyproject: Option<(&str, &str)>,
    ) -> Self {
        if let Some((from, text)) = python_version {
            let line = text
                .lines()
                .map(str::trim)
                .find(|line| !line.is_empty() && !line.starts_with('#'))
                .unwrap_or_default();
            let version = line
                .strip_prefix("cpython-")
                .or_else(|| line.strip_prefix("python"))
                .unwrap_or(line);
            return exact(version, from);
        }
        if let Some((from, text)) = runtime_txt {
            let line = text.trim();
            let version = line.strip_prefix("python-").unwrap_or(line);
            return exact(version, from);
        }
        if let Some((from, text)) = pyproject
            && let Some(spec) = requires_python(text)
        {
            // The default when it fits (the image Runway pins), else the newest that does.
            let fits: Vec<u8> = SUPPORTED
                .into_iter()
                .filter(|minor| satisfies(&spec, *minor))
                .collect();
            return match fits.iter().find(|minor| **minor == DEFAULT).or(fits.last()) {
                Some(minor) => Self::Version {
                    minor: *minor,
                    from: format!("{from} (requires-python {spec})"),
                },
                None => Self::Unsupported {
                    asked: spec,
                    from: format!("{from} (requires-python)"),
                },
            };
        }
        Self::Default
    }
}

/// `3.11`, `3.11.7` or `3.11.7+`: Python 3.11; anything else is unsupported.
fn exact(version: &str, from: &str) -> PythonRequest {
    let mut parts = version.trim().split('.');
    let (major, minor) = (parts.next(), parts.next());
    let minor = match (major, minor.and_then(|m| m.parse::<u8>().ok())) {
        (Some("3"), Some(minor)) if SUPPORTED.contains(&minor) => Some(minor),
        _ => None,
    };
    match minor {
        Some(minor) => PythonRequest::Version {
            minor,
            from: from.to_owned(),
        },
        None => PythonRequest::Unsupported {
            asked: version.trim().to_owned(),
            from: from.to_owned(),
        },
    }
}

/// `[project] requires-python` of a `pyproject.toml`.
fn requires_python(pyproject: &str) -> Option<String> {
    let table: toml::Table = pyproject.parse().ok()?;
    let spec = table.get("project")?.get("requires-python")?.as_str()?;
    Some(spec.trim().to_owned())
}

/// Whether Python 3.`minor` (any patch release) fits a PEP 440 specifier set such as
/// `>=3.10,<3.13`, `~=3.11`, `==3.11.*` or `!=3.12.*`. A clause on a patch release
/// (`>=3.11.4`) is taken at its minor version: some 3.11 fits it.
pub fn satisfies(spec: &str, minor: u8) -> bool {
    spec.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .all(|clause| {
            let (op, version) = split_op(clause);
            let wildcard = version.ends_with(".*");
            let mut parts = version.trim_end_matches(".*").split('.');
            let major: u8 = parts
                .next()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or(0);
            let other: Option<u8> = parts.next().and_then(|p| p.trim().parse().ok());
            let patch = parts.next().is_some();
            let ours = (3u8, minor);
            let theirs = (major, other.unwrap_or(0));
            match op {
                ">=" => ours >= theirs,
                ">" if patch => ours >= theirs,
                ">" => ours > theirs,
                "<=" => ours <= theirs,
                "<" if other.is_none() => ours.0 < major,
                "<" => ours < theirs,
                "==" | "===" if other.is_none() && wildcard => major == 3,
                "==" | "===" => ours == theirs,
                "!=" if wildcard || !patch => ours != theirs,
                "!=" => true,
                // ~=3.11 means >=3.11,==3.*; ~=3.11.2 means >=3.11.2,==3.11.*.
                "~=" if patch => ours == theirs,
                "~=" => ours >= theirs && major == 3,
                _ => false,
            }
        })
}

fn split_op(clause: &str) -> (&str, &str) {
    for op in ["===", "~=", "==", "!=", ">=", "<=", ">", "<"] {
        if let Some(rest) = clause.strip_prefix(op) {
            return (op, rest.trim());
        }
    }
    ("==", clause)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(minor: u8, from: &str) -> PythonRequest {
        PythonRequest::Version {
            minor,
            from: from.to_owned(),
        }
    }

    #[test]
    fn python_version_wins_then_runtime_txt_then_requires_python() {
        let pyproject = "[project]\nname = \"x\"\nrequires-python = \">=3.10\"\n";
        let all = PythonRequest::from_files(
            Some((".python-version", "3.11\n")),
            Some(("runtime.txt", "python-3.10.4")),
            Some(("pyproject.toml", pyproject)),
        );
        assert_eq!(all, version(11, ".python-version"));
        let runtime = PythonRequest::from_files(
            None,
            Some(("runtime.txt", "python-3.10.4\n")),
            Some(("pyproject.toml", pyproject)),
        );
        assert_eq!(runtime, version(10, "runtime.txt"));
        let spec = PythonRequest::from_files(None, None, Some(("pyproject.toml", pyproject)));
        assert_eq!(spec.minor(), Ok(DEFAULT));
        assert_eq!(
            PythonRequest::from_files(None, None, None).minor(),
            Ok(DEFAULT)
        );
    }

    #[test]
    fn reads_the_forms_version_files_take() {
        for (text, minor) in [
            ("3.13", 13),
            ("3.11.7\n", 11),
            ("# pinned\ncpython-3.10\n", 10),
        ] {
            let read = PythonRequest::from_files(Some((".python-version", text)), None, None);
            assert_eq!(read.minor(), Ok(minor), "{text:?}");
        }
    }

    #[test]
    fn a_version_runway_does_not_run_is_refused_naming_the_file() {
        for text in ["2.7", "3.8", "3.14", "pypy3.10", "system"] {
            let read = PythonRequest::from_files(Some((".python-version", text)), None, None);
            let refused = read.minor().unwrap_err();
            assert!(
                refused.contains(".python-version asks for Python"),
                "{refused}"
            );
            assert!(refused.contains("3.10, 3.11, 3.12, 3.13"), "{refused}");
        }
        let old = "[project]\nrequires-python = \"<3.9\"\n";
        let read = PythonRequest::from_files(None, None, Some(("apps/x/pyproject.toml", old)));
        assert!(read.minor().unwrap_err().contains("apps/x/pyproject.toml"));
    }

    #[test]
    fn requires_python_picks_the_default_when_it_fits_else_the_newest_that_does() {
        let pick = |spec: &str| {
            let text = format!("[project]\nrequires-python = \"{spec}\"\n");
            PythonRequest::from_files(None, None, Some(("pyproject.toml", &text))).minor()
        };
        assert_eq!(pick(">=3.10"), Ok(12));
        assert_eq!(pick(">=3.10,<3.12"), Ok(11));
        assert_eq!(pick("==3.13.*"), Ok(13));
        assert_eq!(pick("~=3.10"), Ok(12));
        assert_eq!(pick("~=3.11.2"), Ok(11));
        assert_eq!(pick(">=3.11.4, !=3.12.*"), Ok(13));
        assert_eq!(pick(">3.12"), Ok(13));
        assert_eq!(pick("<4"), Ok(12));
    }
}
