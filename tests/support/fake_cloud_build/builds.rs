//! What the fake Cloud Build simulates: a build's life from QUEUED to its end, its steps run as
//! far as they can be known without Docker, its log in the logs bucket and its notifications
//! on `cloud-builds`.

use super::*;

/// One build, from QUEUED to its end.
pub(super) async fn run(state: Arc<State>, id: String) {
    let queued = state.update(&id, |_| {});
    state.notify(&queued).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let working = state.update(&id, |record| {
        record.build["status"] = json!("WORKING");
        record.build["startTime"] = json!(now());
    });
    state.notify(&working).await;
    let logs_bucket = working["logsBucket"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("gs://")
        .trim_end_matches('/')
        .to_owned();
    let mut log = vec![format!("starting build \"{id}\""), String::new()];
    let outcome = execute(&state, &id, &working, &mut log, &logs_bucket).await;
    let duration = state.inner.lock().expect("fake state").duration;
    tokio::time::sleep(duration).await;
    // The whole log is in the bucket before the build says it ended: a reader that sees the
    // end reads every line (the status turned first once, and a reader got half the log).
    match &outcome {
        Ok(_) => log.push("DONE".to_owned()),
        Err(failure) => log.extend(failure.log.iter().cloned()),
    }
    if !logs_bucket.is_empty() {
        state.upload_log(&logs_bucket, &id, &log).await;
    }
    let finished = match outcome {
        Ok(images) => {
            let mut inner = state.inner.lock().expect("fake state");
            for image in &images {
                let (Some(name), Some(digest)) = (image["name"].as_str(), image["digest"].as_str())
                else {
                    continue;
                };
                inner.registry.push(name, digest);
            }
            let record = inner.builds.get_mut(&id).expect("a build this fake made");
            record.build["status"] = json!("SUCCESS");
            record.build["results"] = json!({
                "images": images,
                "buildStepImages": record.build["steps"].as_array().into_iter().flatten()
                    .map(|_| format!("sha256:{}", hex::encode(Sha256::digest(DOCKER))))
                    .collect::<Vec<_>>(),
            });
            record.build["finishTime"] = json!(now());
            record.build.clone()
        }
        Err(StepFailure { status, kind, .. }) => {
            let detail = log
                .last()
                .and_then(|line| line.strip_prefix("ERROR: "))
                .map(|reason| format!("Build step failure: {reason}"))
                .unwrap_or_else(|| "Build failed; check build logs for details".to_owned());
            state.update(&id, |record| {
                record.build["status"] = json!(status);
                record.build["statusDetail"] = json!(detail);
                record.build["failureInfo"] = json!({
                    "type": kind,
                    "detail": detail,
                });
                record.build["finishTime"] = json!(now());
            })
        }
    };
    let drop_it = state
        .inner
        .lock()
        .expect("fake state")
        .drop_final_notification;
    if !drop_it {
        state.notify(&finished).await;
    }
}

/// Fetches the source and runs the steps; the pushed images, or why it failed.
pub(super) async fn execute(
    state: &State,
    id: &str,
    build: &Value,
    log: &mut Vec<String>,
    logs_bucket: &str,
) -> Result<Vec<Value>, StepFailure> {
    let source = &build["source"]["storageSource"];
    let bucket = source["bucket"].as_str().unwrap_or_default();
    let object = source["object"].as_str().unwrap_or_default();
    let generation = match &source["generation"] {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    };
    log.push("FETCHSOURCE".into());
    log.push(format!(
        "Fetching storage object: gs://{bucket}/{object}#{}",
        generation.as_deref().unwrap_or("0")
    ));
    let tarball = match state.download(bucket, object, generation.as_deref()).await {
        Ok(bytes) => bytes,
        Err(error) => {
            return Err(StepFailure {
                log: vec![
                    "ERROR".into(),
                    format!("ERROR: failed to fetch source gs://{bucket}/{object}: {error}"),
                ],
                status: "FAILURE",
                kind: "FETCH_SOURCE_FAILED",
            });
        }
    };
    let files = match unpack(&tarball) {
        Ok(files) => files,
        Err(error) => {
            return Err(StepFailure {
                log: vec![
                    "ERROR".into(),
                    format!("ERROR: failed to unpack source archive: {error:#}"),
                ],
                status: "FAILURE",
                kind: "FETCH_SOURCE_FAILED",
            });
        }
    };
    log.push(format!(
        "Copying gs://{bucket}/{object}... [1 files][{} B]",
        tarball.len()
    ));
    state.update(id, |record| record.files = files.clone());
    if !logs_bucket.is_empty() {
        // Real builds stream their log; a reader sees the beginning while it runs.
        state.upload_log(logs_bucket, id, log).await;
    }
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&tarball)));
    let failures = state.inner.lock().expect("fake state").failures.clone();
    log.push("BUILD".into());
    let steps = build["steps"].as_array().cloned().unwrap_or_default();
    for (index, step) in steps.iter().enumerate() {
        let label = match step["id"].as_str() {
            Some(step_id) => format!("Step #{index} - \"{step_id}\""),
            None => format!("Step #{index}"),
        };
        log.push(format!("Starting {label}"));
        // BuildKit resolves the cache reference when the step starts: what it names then is
        // what the image's layers may come from.
        let cache = cache_source(step).map(|reference| {
            let digest = state
                .inner
                .lock()
                .expect("fake state")
                .registry
                .resolve(&reference);
            state.update(id, |record| record.cache = digest.clone());
            match digest {
                Some(_) => format!("importing cache manifest from {reference}"),
                None => {
                    format!("WARNING: failed to import cache manifest from {reference}: not found")
                }
            }
        });
        let result = run_step(state, step, &files, &failures);
        let (mut lines, failed) = match result {
            Ok(lines) => (lines, None),
            Err((lines, why)) => (lines, Some(why)),
        };
        if let Some(cache) = cache {
            lines.insert(lines.len().min(1), cache);
        }
        log.extend(lines.into_iter().map(|line| format!("{label}: {line}")));
        log.push(format!("Finished {label}"));
        state.update(id, |record| {
            record.build["steps"][index]["status"] = json!(if failed.is_some() {
                "FAILURE"
            } else {
                "SUCCESS"
            });
        });
        if let Some(why) = failed {
            let name = step["name"].as_str().unwrap_or_default();
            return Err(StepFailure {
                log: vec![
                    "ERROR".into(),
                    format!("ERROR: build step {index} \"{name}\" failed: {why}"),
                ],
                status: "FAILURE",
                kind: "USER_BUILD_STEP",
            });
        }
    }
    log.push("PUSH".into());
    let mut images = Vec::new();
    for name in build["images"].as_array().into_iter().flatten() {
        let name = name.as_str().unwrap_or_default();
        log.push(format!("Pushing {name}"));
        log.push(format!(
            "{}: digest: {digest} size: {}",
            name.rsplit(':').next().unwrap_or_default(),
            tarball.len()
        ));
        images.push(json!({
            "name": name,
            "digest": digest,
            "pushTiming": {"startTime": now(), "endTime": now()},
        }));
    }
    Ok(images)
}

type StepResult = Result<Vec<String>, (Vec<String>, String)>;

/// What a `gcr.io/cloud-builders/docker` step would do, as far as it can be known without Docker.
pub(super) fn run_step(
    state: &State,
    step: &Value,
    files: &BTreeMap<String, Vec<u8>>,
    failures: &[(String, String)],
) -> StepResult {
    let name = step["name"].as_str().unwrap_or_default();
    let args: Vec<&str> = step["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let entrypoint = step["entrypoint"].as_str().unwrap_or_default();
    let exited = |code: u8| format!("step exited with non-zero status: {code}");
    if name != DOCKER {
        return Err((
            vec![format!("this fake runs only {DOCKER} steps, not {name}")],
            exited(1),
        ));
    }
    let mut lines = vec![format!("Already have image (with digest): {DOCKER}")];
    // `bash -c "docker pull IMAGE || exit 0"`: the cache warm-up.
    if entrypoint == "bash" && args.first() == Some(&"-c") {
        let script = args.get(1).copied().unwrap_or_default();
        let Some(image) = script
            .strip_prefix("docker pull ")
            .and_then(|rest| rest.split_whitespace().next())
        else {
            return Err((vec![format!("this fake cannot run {script:?}")], exited(1)));
        };
        let found = state
            .inner
            .lock()
            .expect("fake state")
            .registry
            .resolve(image)
            .is_some();
        if found {
            let (name, tag) = split_reference(image);
            let shown = image.rsplit_once('@').map_or(tag, |(_, digest)| digest);
            lines.push(format!("{shown}: Pulling from {name}"));
            lines.push(format!("Status: Downloaded newer image for {image}"));
            return Ok(lines);
        }
        lines.push(format!(
            "Error response from daemon: manifest for {image} not found: manifest unknown"
        ));
        return if script.contains("|| exit 0") {
            Ok(lines)
        } else {
            Err((lines, exited(1)))
        };
    }
    if !entrypoint.is_empty() || args.first() != Some(&"build") {
        return Err((
            vec![format!("this fake cannot run docker {}", args.join(" "))],
            exited(1),
        ));
    }
    let dockerfile_path = args
        .windows(2)
        .find(|pair| pair[0] == "-f" || pair[0] == "--file")
        .map(|pair| pair[1].trim_start_matches("./").to_owned())
        .unwrap_or_else(|| "Dockerfile".to_owned());
    if args.last() != Some(&".") {
        return Err((
            vec!["this fake builds only the context \".\"".into()],
            exited(1),
        ));
    }
    let size: usize = files.values().map(Vec::len).sum();
    lines.push(format!(
        "Sending build context to Docker daemon  {:.2}kB",
        size as f64 / 1000.0
    ));
    let Some(dockerfile) = files.get(&dockerfile_path) else {
        lines.push(format!(
            "unable to prepare context: unable to evaluate symlinks in Dockerfile path: lstat \
             /workspace/{dockerfile_path}: no such file or directory"
        ));
        return Err((lines, exited(1)));
    };
    let dockerfile = String::from_utf8_lossy(dockerfile).into_owned();
    let instructions = instructions(&dockerfile);
    if instructions
        .iter()
        .find(|(keyword, _)| keyword != "ARG")
        .is_none_or(|(keyword, _)| keyword != "FROM")
    {
        lines.push(
            "Error response from daemon: dockerfile parse error: no build stage in current \
             context"
                .into(),
        );
        return Err((lines, exited(1)));
    }
    // Every file a knob fails, with the line it fails on.
    let knobs: Vec<(String, String)> = failures
        .iter()
        .filter_map(|(path, needle)| {
            let text = String::from_utf8_lossy(files.get(path)?);
            let line = text.lines().find(|line| line.contains(needle.as_str()))?;
            Some((path.clone(), line.trim().to_owned()))
        })
        .collect();
    // Whether some RUN installs from a file the fake recognises; if none does, it cannot tell
    // what the Dockerfile installs, and a knob fails the build at its end.
    let mut installs_known = false;
    let copies_context = instructions
        .iter()
        .any(|(keyword, rest)| keyword == "COPY" && matches!(rest.as_str(), ". ." | ". ./"));
    let total = instructions.len();
    for (number, (keyword, rest)) in instructions.iter().enumerate() {
        lines.push(format!("Step {}/{total} : {keyword} {rest}", number + 1));
        if matches!(keyword.as_str(), "COPY" | "ADD") {
            for source in copy_sources(rest) {
                let present = source == "."
                    || files.contains_key(&source)
                    || files
                        .keys()
                        .any(|path| path.starts_with(&format!("{source}/")));
                if !present {
                    lines.push(format!(
                        "COPY failed: file not found in build context or excluded by \
                         .dockerignore: stat {source}: file does not exist"
                    ));
                    return Err((lines, exited(1)));
                }
            }
        }
        // A knob's failure surfaces in the first RUN that reads its file (or `uv sync`, which
        // reads the lock); failing that, at the end of the build.
        if keyword == "RUN" {
            installs_known |= rest.contains("--requirement") || rest.contains("uv sync");
            let failing = knobs
                .iter()
                .find(|(path, _)| reads(rest, path) || rest.contains("uv sync"));
            if let Some((path, line)) = failing {
                lines.extend(knob_failure(path, line, rest));
                return Err((lines, exited(1)));
            }
        }
        // The main file is only known relative to the context when the whole context is the
        // working directory (Runway's Dockerfile, and the usual `COPY . .`).
        if keyword == "CMD"
            && copies_context
            && let Some(main) = streamlit_main(rest)
            && !files.contains_key(&main)
        {
            lines.push(format!(
                "the Dockerfile runs `streamlit run {main}`, but {main} is not in the source"
            ));
            return Err((lines, exited(1)));
        }
    }
    if let Some((path, line)) = knobs.first().filter(|_| !installs_known) {
        lines.extend(knob_failure(path, line, "the last step"));
        return Err((lines, exited(1)));
    }
    let digest = hex::encode(Sha256::digest(dockerfile.as_bytes()));
    lines.push(format!("Successfully built {}", &digest[..12]));
    for pair in args.windows(2).filter(|pair| pair[0] == "-t") {
        lines.push(format!("Successfully tagged {}", pair[1]));
    }
    Ok(lines)
}

/// Whether a `RUN` reads the context file `path`, as far as the fake can tell: a word of a shell
/// form, or an argument of an exec form; the generated Dockerfile's exec form for a monorepo
/// app (`["sh", "-c", "cd \"$1\" && … \"$2\"", NAME, FOLDER/, FILE]`) reads FOLDER/FILE.
fn reads(run: &str, path: &str) -> bool {
    match serde_json::from_str::<Vec<String>>(run) {
        Ok(argv) if argv.len() > 4 && argv[2].contains("cd \"$1\"") => argv[5..]
            .iter()
            .any(|file| format!("{}{file}", argv[4]) == path),
        Ok(argv) => argv.iter().any(|arg| arg == path),
        Err(_) => run.split_whitespace().any(|word| word == path),
    }
}

pub(super) fn knob_failure(path: &str, line: &str, command: &str) -> [String; 2] {
    [
        format!(
            "  × No solution found when resolving dependencies: {path} asks for `{line}`, which \
             cannot be installed"
        ),
        format!("The command '/bin/sh -c {command}' returned a non-zero code: 1"),
    ]
}

/// A Dockerfile's instructions, continuation lines joined: (KEYWORD, rest).
pub(super) fn instructions(dockerfile: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(continued) = trimmed.strip_suffix('\\') {
            current.push_str(continued);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, rest) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        found.push((keyword.to_ascii_uppercase(), rest.trim().to_owned()));
        current.clear();
    }
    found
}

/// The context paths a COPY/ADD reads (not `--from` copies, URLs or globs).
pub(super) fn copy_sources(rest: &str) -> Vec<String> {
    let mut words: Vec<String> = if rest.trim_start().starts_with('[') {
        serde_json::from_str(rest).unwrap_or_default()
    } else {
        rest.split_whitespace().map(str::to_owned).collect()
    };
    if words.iter().any(|word| word.starts_with("--from")) {
        return Vec::new();
    }
    words.retain(|word| !word.starts_with("--"));
    words.pop(); // the destination
    words
        .into_iter()
        .filter(|word| !word.contains("://") && !word.contains(['*', '?', '[']))
        .map(|word| {
            word.trim_start_matches("./")
                .trim_end_matches('/')
                .to_owned()
        })
        .map(|word| {
            if word.is_empty() {
                ".".to_owned()
            } else {
                word
            }
        })
        .collect()
}

/// The main file a CMD runs with `streamlit run`, in exec form (Runway's `sh -c … "$1"`, or a
/// plain argv) or shell form.
pub(super) fn streamlit_main(rest: &str) -> Option<String> {
    let argv: Vec<String> = if rest.trim_start().starts_with('[') {
        serde_json::from_str(rest).ok()?
    } else {
        rest.split_whitespace().map(str::to_owned).collect()
    };
    if argv.len() >= 3 && argv[0] == "sh" && argv[1] == "-c" {
        let script = &argv[2];
        if script.contains("streamlit run \"$1\"") {
            return argv.get(4).cloned();
        }
        let words: Vec<String> = script.split_whitespace().map(str::to_owned).collect();
        return after_run(&words);
    }
    after_run(&argv)
}

pub(super) fn after_run(words: &[String]) -> Option<String> {
    let at = words
        .windows(2)
        .position(|pair| pair[0].ends_with("streamlit") && pair[1] == "run")?;
    let main = words.get(at + 2)?.trim_matches(['"', '\'']);
    (main.ends_with(".py") && !main.contains('$') && !main.starts_with('/'))
        .then(|| main.trim_start_matches("./").to_owned())
}

/// The image a `docker build` step seeds its layer cache from (`--cache-from REF`).
pub(super) fn cache_source(step: &Value) -> Option<String> {
    let args: Vec<&str> = step["args"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if args.first() != Some(&"build") {
        return None;
    }
    args.windows(2).find_map(|pair| {
        (pair[0] == "--cache-from")
            .then(|| pair[1].to_owned())
            .or_else(|| pair[0].strip_prefix("--cache-from=").map(str::to_owned))
    })
}

/// The regular files of a gzipped tarball, by path.
pub(super) fn unpack(tarball: &[u8]) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tarball));
    let mut files = BTreeMap::new();
    for entry in archive.entries().context("reading the archive")? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path()?.display().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        files.insert(path.trim_start_matches("./").to_owned(), bytes);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_main_file_in_runways_cmd_and_in_plain_ones() {
        let runway = r#"["sh", "-c", "exec streamlit run \"$1\" --server.port=\"$PORT\"", "streamlit", "pages/app.py"]"#;
        assert_eq!(streamlit_main(runway).as_deref(), Some("pages/app.py"));
        assert_eq!(
            streamlit_main(r#"["streamlit", "run", "app.py", "--server.port=8080"]"#).as_deref(),
            Some("app.py")
        );
        assert_eq!(
            streamlit_main("streamlit run ./main.py --server.port=$PORT").as_deref(),
            Some("main.py")
        );
        assert_eq!(streamlit_main(r#"["python", "serve.py"]"#), None);
    }

    #[test]
    fn reads_copy_sources_but_not_stage_copies() {
        assert_eq!(
            copy_sources("pyproject.toml uv.lock ./"),
            ["pyproject.toml", "uv.lock"]
        );
        assert_eq!(copy_sources(". ."), ["."]);
        assert!(copy_sources("--from=ghcr.io/astral-sh/uv:0.13.0 /uv /uvx /bin/").is_empty());
        assert_eq!(copy_sources(r#"["a b.txt", "/x/"]"#), ["a b.txt"]);
    }

    #[test]
    fn joins_continued_lines_into_one_instruction() {
        let found = instructions("# c\nFROM x\nENV A=1 \\\n    B=2\nRUN true\n");
        assert_eq!(
            found,
            [
                ("FROM".to_owned(), "x".to_owned()),
                ("ENV".to_owned(), "A=1  B=2".to_owned()),
                ("RUN".to_owned(), "true".to_owned()),
            ]
        );
    }
}
