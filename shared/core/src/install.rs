//! Which of an app's manifests wins: one decision, followed by the local `UvBuilder` and by the
//! Dockerfile Runway generates for Cloud Build, so an app installs the same way on both.
//!
//! In a monorepo the files nearest the main file win: for `apps/sales/app.py`, the first of
//! `apps/sales/`, `apps/` and the root that has a `requirements.txt` or a `pyproject.toml`
//! gives the dependencies (all of them from that one folder), and the nearest `packages.txt`
//! gives the Debian packages.

use crate::domain::MainFile;
use crate::python::PythonRequest;

/// What installing an app depends on: its dependency files, in the folder nearest its main
/// file that has any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceFiles {
    /// The folder the dependency files are in, relative to the checkout, with a final `/`;
    /// empty for the root.
    pub dir: String,
    /// The folder `packages.txt` is in (as `dir`), when there is one.
    pub packages_dir: String,
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
    /// The Python the app asks for (`.python-version`, `runtime.txt`, `requires-python`).
    pub python: PythonRequest,
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
    /// The files a folder's install is read from.
    pub const MANIFESTS: [&str; 6] = [
        "uv.lock",
        "pyproject.toml",
        "requirements.txt",
        "packages.txt",
        ".python-version",
        "runtime.txt",
    ];

    /// The folders whose manifests may count for `main_file`, nearest first: its own, each
    /// parent, and the root (`""`), each with a final `/`.
    pub fn folders(main_file: &MainFile) -> Vec<String> {
        let mut folders = Vec::new();
        let mut path = main_file.as_str();
        while let Some((parent, _)) = path.rsplit_once('/') {
            folders.push(format!("{parent}/"));
            path = parent;
        }
        folders.push(String::new());
        folders
    }

    /// Every file [`nearest`](Self::nearest) may read for `main_file`: what a builder that
    /// streams the source keeps the text of.
    pub fn candidates(main_file: &MainFile) -> Vec<String> {
        Self::folders(main_file)
            .iter()
            .flat_map(|dir| Self::MANIFESTS.map(|name| format!("{dir}{name}")))
            .collect()
    }

    /// Looks at a checkout through `read`, which returns the text of a file by its path from
    /// the root: the dependency files of the folder nearest `main_file` that has a
    /// `requirements.txt` or a `pyproject.toml`, and the nearest `packages.txt`.
    pub fn nearest(main_file: &MainFile, read: impl Fn(&str) -> Option<String>) -> Self {
        let folders = Self::folders(main_file);
        let has = |dir: &str, name: &str| read(&format!("{dir}{name}")).is_some();
        let dir = folders
            .iter()
            .find(|dir| has(dir, "requirements.txt") || has(dir, "pyproject.toml"))
            .cloned()
            .unwrap_or_default();
        let packages_dir = folders.iter().find(|dir| has(dir, "packages.txt"));
        let requirements = read(&format!("{dir}requirements.txt"));
        let nearest_text = |name: &str| {
            folders.iter().find_map(|folder| {
                let path = format!("{folder}{name}");
                read(&path).map(|text| (path, text))
            })
        };
        let (python_version, runtime_txt) =
            (nearest_text(".python-version"), nearest_text("runtime.txt"));
        let pyproject_path = format!("{dir}pyproject.toml");
        let pyproject = read(&pyproject_path);
        let python = PythonRequest::from_files(
            python_version
                .as_ref()
                .map(|(p, t)| (p.as_str(), t.as_str())),
            runtime_txt.as_ref().map(|(p, t)| (p.as_str(), t.as_str())),
            pyproject.as_deref().map(|t| (pyproject_path.as_str(), t)),
        );
        Self {
            uv_lock: has(&dir, "uv.lock"),
            pyproject_toml: has(&dir, "pyproject.toml"),
            requirements_txt: requirements.is_some(),
            requirements_use_source: requirements.as_deref().is_some_and(uses_source),
            requirements_name_streamlit: requirements.as_deref().is_some_and(names_streamlit),
            packages_txt: packages_dir.is_some(),
            packages_dir: packages_dir.cloned().unwrap_or_default(),
            python,
            dir,
        }
    }

    /// The files at the checkout's root alone (an app whose main file is there).
    pub fn from_root(read: impl Fn(&str) -> Option<String>) -> Self {
        let root = MainFile::parse("app.py").expect("a valid main file");
        Self::nearest(&root, read)
    }

    /// The path of the dependency file `name` this plan reads, from the checkout's root.
    pub fn path(&self, name: &str) -> String {
        format!("{}{name}", self.dir)
    }

    /// Where `packages.txt` is, from the checkout's root, when there is one.
    pub fn packages_path(&self) -> Option<String> {
        self.packages_txt
            .then(|| format!("{}packages.txt", self.packages_dir))
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

    fn nearest(main: &str, present: &[(&str, &str)]) -> SourceFiles {
        let main = MainFile::parse(main).unwrap();
        SourceFiles::nearest(&main, |name| {
            present
                .iter()
                .find(|(file, _)| *file == name)
                .map(|(_, text)| (*text).to_owned())
        })
    }

    #[test]
    fn the_folders_of_a_main_file_run_from_its_own_to_the_root() {
        let main = MainFile::parse("apps/sales/app.py").unwrap();
        assert_eq!(SourceFiles::folders(&main), ["apps/sales/", "apps/", ""]);
        let root = MainFile::parse("app.py").unwrap();
        assert_eq!(SourceFiles::folders(&root), [""]);
        let candidates = SourceFiles::candidates(&main);
        assert_eq!(candidates.len(), 18);
        assert!(candidates.contains(&"apps/.python-version".to_owned()));
        assert!(candidates.contains(&"apps/sales/requirements.txt".to_owned()));
        assert!(candidates.contains(&"packages.txt".to_owned()));
    }

    #[test]
    fn in_a_monorepo_the_dependency_files_nearest_the_main_file_win_together() {
        let found = nearest(
            "apps/sales/app.py",
            &[
                ("uv.lock", ""),
                ("pyproject.toml", ""),
                ("apps/sales/requirements.txt", "-e .\n"),
                ("apps/finance/requirements.txt", "pandas\n"),
            ],
        );
        assert_eq!(found.dir, "apps/sales/");
        assert_eq!(
            found.path("requirements.txt"),
            "apps/sales/requirements.txt"
        );
        // The root's lock is another folder's: it does not mix in.
        assert!(!found.uv_lock && !found.pyproject_toml);
        assert!(found.requirements_use_source);
        assert_eq!(
            found.install(),
            Install::Requirements {
                file: "requirements.txt",
                needs_source: true
            }
        );
    }

    #[test]
    fn a_main_file_with_no_files_of_its_own_takes_the_nearest_parents() {
        let found = nearest(
            "apps/sales/pages/app.py",
            &[
                ("apps/uv.lock", ""),
                ("apps/pyproject.toml", ""),
                ("requirements.txt", ""),
                ("apps/sales/packages.txt", "libgl1\n"),
                ("packages.txt", "curl\n"),
            ],
        );
        assert_eq!(found.dir, "apps/");
        assert_eq!(found.install(), Install::Locked);
        assert_eq!(
            found.packages_path().as_deref(),
            Some("apps/sales/packages.txt")
        );
        let root = nearest("apps/sales/app.py", &[("requirements.txt", "")]);
        assert_eq!(root.dir, "");
        assert_eq!(root.packages_path(), None);
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
