//! Which of an app's manifests wins: one decision, followed by the local `UvBuilder` and by the
//! Dockerfile Runway generates for Cloud Build, so an app installs the same way on both.

/// What installing an app depends on, at the root of its checkout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceFiles {
    pub uv_lock: bool,
    pub pyproject_toml: bool,
    pub requirements_txt: bool,
    /// `requirements.txt` includes other files or installs local paths (`-r`, `-c`, `-e .`,
    /// `./pkg`), so it cannot be installed before the rest of the source is there.
    pub requirements_use_source: bool,
    /// `requirements.txt` names streamlit itself (any version, extras or markers).
    pub requirements_name_streamlit: bool,
    /// Debian packages, one per line (as Streamlit Community Cloud reads them).
    pub packages_txt: bool,
}

/// How the app's Python dependencies are installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Install {
    /// Exactly the versions in `uv.lock` (`uv sync --frozen`), which needs `pyproject.toml`.
    Locked,
    /// `uv pip install --requirement FILE`.
    Requirements {
        file: &'static str,
        /// The file refers to other files of the repository.
        needs_source: bool,
    },
    /// No manifest: Streamlit alone.
    Nothing,
}

impl SourceFiles {
    /// The root files `from_root` reads.
    pub const ROOT_FILES: [&str; 4] = [
        "uv.lock",
        "pyproject.toml",
        "requirements.txt",
        "packages.txt",
    ];

    /// Looks at a checkout through `read`, which returns the text of a file at its root.
    pub fn from_root(read: impl Fn(&str) -> Option<String>) -> Self {
        let requirements = read("requirements.txt");
        Self {
            uv_lock: read("uv.lock").is_some(),
            pyproject_toml: read("pyproject.toml").is_some(),
            requirements_txt: requirements.is_some(),
            requirements_use_source: requirements.as_deref().is_some_and(uses_source),
            requirements_name_streamlit: requirements.as_deref().is_some_and(names_streamlit),
            packages_txt: read("packages.txt").is_some(),
        }
    }

    /// A lock wins (with the `pyproject.toml` it locks), then `requirements.txt`, then the
    /// dependencies `pyproject.toml` lists.
    pub fn install(&self) -> Install {
        if self.uv_lock && self.pyproject_toml {
            Install::Locked
        } else if self.requirements_txt {
            Install::Requirements {
                file: "requirements.txt",
                needs_source: self.requirements_use_source,
            }
        } else if self.pyproject_toml {
            Install::Requirements {
                file: "pyproject.toml",
                needs_source: false,
            }
        } else {
            Install::Nothing
        }
    }
}

/// Whether a requirements file points at other files of the repository.
pub fn uses_source(requirements: &str) -> bool {
    requirements.lines().map(str::trim).any(|line| {
        [
            "-r",
            "-c",
            "-e",
            "--requirement",
            "--constraint",
            "--editable",
        ]
        .iter()
        .any(|option| {
            line.strip_prefix(option)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '=', '\t']))
        }) || line.starts_with('.')
            || line.starts_with('/')
            || line.starts_with("file:")
    })
}

/// Whether a requirements file lists streamlit (any version, extras or markers).
pub fn names_streamlit(requirements: &str) -> bool {
    requirements.lines().any(|line| {
        let name: String = line
            .trim()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .collect();
        name.eq_ignore_ascii_case("streamlit")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(present: &[(&str, &str)]) -> SourceFiles {
        SourceFiles::from_root(|name| {
            present
                .iter()
                .find(|(file, _)| *file == name)
                .map(|(_, text)| (*text).to_owned())
        })
    }

    #[test]
    fn a_lock_with_its_pyproject_wins_over_requirements() {
        let found = files(&[
            ("uv.lock", ""),
            ("pyproject.toml", ""),
            ("requirements.txt", ""),
        ]);
        assert_eq!(found.install(), Install::Locked);
    }

    #[test]
    fn a_lock_without_pyproject_falls_back_to_requirements() {
        let found = files(&[("uv.lock", ""), ("requirements.txt", "pandas\n")]);
        assert_eq!(
            found.install(),
            Install::Requirements {
                file: "requirements.txt",
                needs_source: false
            }
        );
    }

    #[test]
    fn pyproject_alone_is_installed_as_requirements() {
        let found = files(&[("pyproject.toml", "")]);
        assert_eq!(
            found.install(),
            Install::Requirements {
                file: "pyproject.toml",
                needs_source: false
            }
        );
    }

    #[test]
    fn no_manifest_installs_nothing_but_streamlit() {
        assert_eq!(files(&[]).install(), Install::Nothing);
    }

    #[test]
    fn notes_requirements_that_need_the_source_or_name_streamlit() {
        let found = files(&[
            ("requirements.txt", "-r base.txt\nStreamlit[charts]>=1.40\n"),
            ("packages.txt", "libgl1\n"),
        ]);
        assert!(found.requirements_use_source);
        assert!(found.requirements_name_streamlit);
        assert!(found.packages_txt);
        assert_eq!(
            found.install(),
            Install::Requirements {
                file: "requirements.txt",
                needs_source: true
            }
        );
    }

    #[test]
    fn recognises_requirements_that_need_the_rest_of_the_source() {
        assert!(uses_source("-r base.txt\n"));
        assert!(uses_source("--requirement=base.txt"));
        assert!(uses_source("pandas\n-e .\n"));
        assert!(uses_source("./libs/helpers\n"));
        assert!(uses_source("file:///src/pkg"));
        assert!(!uses_source(
            "streamlit==1.40\n# -r is a comment here\npandas>=2"
        ));
        assert!(!uses_source("-rich-thing"));
    }

    #[test]
    fn finds_streamlit_in_requirements_however_it_is_pinned() {
        for listed in [
            "streamlit",
            "streamlit==1.40.0",
            "Streamlit>=1.30",
            "streamlit[charts] ; python_version > '3.9'",
            "pandas\n  streamlit~=1.40\n",
        ] {
            assert!(names_streamlit(listed), "{listed}");
        }
        for absent in ["streamlit-aggrid", "pandas\nnumpy", "# streamlit", ""] {
            assert!(!names_streamlit(absent), "{absent}");
        }
    }
}
