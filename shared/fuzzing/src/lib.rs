//! The harness every fuzz target runs on, in one place (a dev-dependency only, so that no
//! layer's own dependencies change): a target first replays its committed seeds
//! (`tests/corpus/{target}/` in its crate, each named for what it must give: `ok-…`, `bad-…`,
//! …), then runs a fixed number of generated cases; `PROPTEST_CASES` sets another number, to
//! fuzz longer. A failure is shrunk to a small input, and its seed is kept in the crate's
//! `proptest-regressions/fuzz.txt` and tried first from then on.
//!
//! ```ignore
//! const CORPUS: Corpus = Corpus::new(env!("CARGO_MANIFEST_DIR"));
//!
//! #[test]
//! fn repo_url() {
//!     CORPUS.replay("repo_url", |bytes, accepted| check(bytes, accepted));
//!     CORPUS.fuzz(4000, repo_urls(), |input| check_repo_url(&input));
//! }
//! ```

use std::path::{Path, PathBuf};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseResult, TestRunner};

/// The seed names most targets use: `ok-…` must be accepted, `bad-…` refused.
pub const OK_BAD: &[(&str, bool)] = &[("ok", true), ("bad", false)];

/// One crate's fuzzing files: its seeds and its regressions file. Built from the crate's own
/// `CARGO_MANIFEST_DIR` (this crate's would name the wrong crate).
#[derive(Clone, Copy, Debug)]
pub struct Corpus {
    manifest_dir: &'static str,
}

impl Corpus {
    /// The corpus of the crate at `manifest_dir`: pass `env!("CARGO_MANIFEST_DIR")`.
    pub const fn new(manifest_dir: &'static str) -> Self {
        Self { manifest_dir }
    }

    /// The folder of `target`'s committed seeds, `tests/corpus/{target}/`.
    pub fn dir(&self, target: &str) -> PathBuf {
        Path::new(self.manifest_dir)
            .join("tests/corpus")
            .join(target)
    }

    /// The committed seeds of `target`, sorted by name (so that they run, and fail, in the
    /// same order everywhere). A missing or empty folder is a failure: a target that replays
    /// nothing would pass unnoticed.
    pub fn seeds(&self, target: &str) -> Vec<(String, Vec<u8>)> {
        let dir = self.dir(target);
        let mut seeds: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
            .map(|entry| {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&path).unwrap())
            })
            .collect();
        seeds.sort();
        assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
        seeds
    }

    /// Replays each seed through `check`, which is told whether the seed must be accepted
    /// (`ok-…`) or refused (`bad-…`).
    pub fn replay(&self, target: &str, check: impl Fn(&[u8], bool) -> TestCaseResult) {
        self.replay_as(target, OK_BAD, |_, bytes, accepted| check(&bytes, accepted));
    }

    /// Replays each seed through `check` with its name, its bytes and what it must give: the
    /// value `kinds` pairs with its name's prefix (before the first `-`). A seed with another
    /// prefix, or for which `check` fails, panics naming `{target}/{name}`.
    pub fn replay_as<T: Clone>(
        &self,
        target: &str,
        kinds: &[(&str, T)],
        mut check: impl FnMut(&str, Vec<u8>, T) -> TestCaseResult,
    ) {
        for (name, bytes) in self.seeds(target) {
            let prefix = name.split_once('-').map(|(prefix, _)| prefix);
            let Some((_, kind)) = kinds.iter().find(|(known, _)| Some(*known) == prefix) else {
                panic!(
                    "seed {target}/{name}: its name must start with {}",
                    prefixes(kinds)
                );
            };
            if let Err(error) = check(&name, bytes, kind.clone()) {
                panic!("seed {target}/{name}: {error}");
            }
        }
    }

    /// Runs `check` on `cases` generated inputs (or `PROPTEST_CASES`). A failure is shrunk to
    /// a small input, and its seed is kept in `proptest-regressions/fuzz.txt` and tried first
    /// from then on.
    pub fn fuzz<S: Strategy>(
        &self,
        cases: u32,
        strategy: S,
        check: impl Fn(S::Value) -> TestCaseResult,
    ) {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|cases| cases.parse().ok())
            .unwrap_or(cases);
        // proptest takes the file's path as `&'static str` only; one small string a run.
        let regressions = format!("{}/proptest-regressions/fuzz.txt", self.manifest_dir);
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions.leak()))),
            ..Config::default()
        });
        if let Err(error) = runner.run(&strategy, check) {
            panic!("{error}\n{runner}");
        }
    }
}

/// `ok-, bad- or large-`: the prefixes a seed's name may start with.
fn prefixes<T>(kinds: &[(&str, T)]) -> String {
    let names: Vec<_> = kinds
        .iter()
        .map(|(prefix, _)| format!("{prefix}-"))
        .collect();
    match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => "a known prefix".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use proptest::prelude::*;

    use super::*;

    /// A crate of its own, in a fresh folder, with `seeds` in `tests/corpus/t/`.
    fn crate_with(seeds: &[&str]) -> (tempfile::TempDir, Corpus) {
        let dir = tempfile::tempdir().unwrap();
        let corpus = Corpus::new(dir.path().to_str().unwrap().to_owned().leak());
        std::fs::create_dir_all(corpus.dir("t")).unwrap();
        for name in seeds {
            std::fs::write(corpus.dir("t").join(name), name).unwrap();
        }
        (dir, corpus)
    }

    fn panic_text(run: impl FnOnce()) -> String {
        let error = catch_unwind(AssertUnwindSafe(run)).unwrap_err();
        match error.downcast::<String>() {
            Ok(text) => *text,
            Err(error) => (*error.downcast::<&str>().unwrap()).to_owned(),
        }
    }

    #[test]
    fn seeds_are_replayed_sorted_with_what_their_names_say() {
        let (_dir, corpus) = crate_with(&["ok-b", "large-c", "bad-a", "ok-a"]);
        let seen = RefCell::new(Vec::new());
        let kinds = [("ok", 0), ("bad", 1), ("large", 2)];
        corpus.replay_as("t", &kinds, |name, bytes, kind| {
            assert_eq!(bytes, name.as_bytes());
            seen.borrow_mut().push((name.to_owned(), kind));
            Ok(())
        });
        let names = ["bad-a", "large-c", "ok-a", "ok-b"].map(str::to_owned);
        assert_eq!(
            seen.into_inner(),
            names.into_iter().zip([1, 2, 0, 0]).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_failing_or_misnamed_seed_is_named() {
        let (_dir, corpus) = crate_with(&["bad-x", "ok-y"]);
        let text = panic_text(|| {
            corpus.replay("t", |_, accepted| {
                prop_assert!(accepted, "refused");
                Ok(())
            })
        });
        assert!(
            text.starts_with("seed t/bad-x: ") && text.contains("refused"),
            "{text}"
        );
        let (_dir, corpus) = crate_with(&["large-z"]);
        let text = panic_text(|| corpus.replay("t", |_, _| Ok(())));
        assert_eq!(text, "seed t/large-z: its name must start with ok- or bad-");
        let (_dir, corpus) = crate_with(&[]);
        let text = panic_text(|| corpus.replay("t", |_, _| Ok(())));
        assert!(text.starts_with("no seeds in "), "{text}");
    }

    #[test]
    fn fuzzing_runs_the_cases_asked_and_keeps_a_failure() {
        let (dir, corpus) = crate_with(&[]);
        let runs = Cell::new(0u32);
        corpus.fuzz(37, any::<u8>(), |_| {
            runs.set(runs.get() + 1);
            Ok(())
        });
        let asked = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|cases| cases.parse().ok());
        assert_eq!(runs.get(), asked.unwrap_or(37));

        let text = panic_text(|| {
            corpus.fuzz(1000, any::<u32>(), |n| {
                prop_assert!(n < 1000);
                Ok(())
            })
        });
        // Shrunk as far as its cases allow (`PROPTEST_CASES` bounds the shrinking too).
        assert!(text.contains("minimal failing input: "), "{text}");
        let kept = std::fs::read_to_string(dir.path().join("proptest-regressions/fuzz.txt"));
        assert!(kept.unwrap().contains("cc "), "no seed kept");
    }

    #[test]
    fn prefixes_read_as_a_list() {
        assert_eq!(prefixes(&[("ok", ())]), "ok-");
        assert_eq!(prefixes(OK_BAD), "ok- or bad-");
        assert_eq!(
            prefixes(&[("ok", 0), ("bad", 1), ("large", 2)]),
            "ok-, bad- or large-"
        );
    }
}
