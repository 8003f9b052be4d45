//! `packages.txt` on this machine: the Debian packages an app asks for (as Streamlit Community
//! Cloud and the generated Dockerfile read them), never silently ignored. Those already installed
//! are noted; missing ones are installed with `apt-get` when the operator allows it
//! (`RUNWAY_INSTALL_PACKAGES=1`, with runway running as root), and otherwise fail the build with
//! a message naming them and the command that installs them. A machine without dpkg (macOS,
//! another distribution) cannot check them: the build log says so, and the build goes on.

use std::process::Stdio;

use tokio::process::Command;

/// The package names, one per line: `#` comments and blank lines dropped; a name Debian would
/// not accept (one starting with `-` would be an option to apt) is refused.
pub(crate) fn names(text: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for line in text.lines() {
        let name = line.split('#').next().unwrap_or_default().trim();
        if name.is_empty() {
            continue;
        }
        let valid = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && name.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.')
            });
        if !valid {
            return Err(format!(
                "packages.txt names {name:?}, which is not a Debian package name (lowercase \
                 letters, digits, '+', '-' and '.', one per line)"
            ));
        }
        if !names.iter().any(|known| known == name) {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// What this machine says of the packages.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// No dpkg: nothing can be checked.
    Unknown,
    /// The ones not installed.
    Missing(Vec<String>),
}

/// Which of `names` dpkg does not list as installed.
pub(crate) async fn missing(names: &[String]) -> Found {
    let output = Command::new("dpkg-query")
        .args([
            "--show",
            "--showformat=${Package} ${db:Status-Status}\\n",
            "--",
        ])
        .args(names)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await;
    // dpkg-query exits 1 when some name is unknown, and still lists the others.
    let Ok(output) = output else {
        return Found::Unknown;
    };
    let listed = String::from_utf8_lossy(&output.stdout);
    let installed: Vec<&str> = listed
        .lines()
        .filter_map(|line| line.strip_suffix(" installed"))
        .map(|name| name.split(':').next().unwrap_or(name))
        .collect();
    Found::Missing(
        names
            .iter()
            .filter(|name| !installed.contains(&name.as_str()))
            .cloned()
            .collect(),
    )
}

/// Whether this process may install packages: root, and allowed.
pub(crate) fn may_install(allowed: bool) -> bool {
    allowed && nix::unistd::geteuid().is_root()
}

/// `apt-get install` of `names`, its output appended to `log`.
pub(crate) async fn install(names: &[String], log: &tokio::fs::File) -> Result<(), String> {
    let (stdout, stderr) = crate::into_log(log).await?;
    let status = Command::new("apt-get")
        .args(["install", "--yes", "--no-install-recommends", "--"])
        .args(names)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|e| format!("could not run apt-get: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "packages.txt asks for {}, which apt-get could not install ({status}; its output is \
             in the build log)",
            names.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_one_name_a_line_without_comments_or_repeats() {
        let text = "# for OpenCV\nlibgl1\n\nffmpeg  # video\nlibgl1\nlibstdc++6\n";
        assert_eq!(names(text).unwrap(), ["libgl1", "ffmpeg", "libstdc++6"]);
        assert_eq!(names("# nothing\n\n").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn refuses_what_is_no_package_name() {
        for bad in ["--allow-unauthenticated", "Ffmpeg", "lib gl", "pkg;rm"] {
            assert!(names(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn dpkg_tells_installed_packages_from_missing_ones() {
        let asked = vec!["dpkg".to_owned(), "runway-no-such-package-3b7e".to_owned()];
        match missing(&asked).await {
            Found::Missing(missing) => assert_eq!(missing, ["runway-no-such-package-3b7e"]),
            Found::Unknown => {} // a machine without dpkg: nothing to tell
        }
    }
}
