//! The five function binaries as processes: they refuse to start naming every missing variable,
//! answer `/health` and `/ready`, and stop cleanly on SIGTERM, as Cloud Run sends it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use runway_tests::production::function_bin;

/// Runs `function` with only `env` (and PATH), expecting it to exit; returns (code, output).
fn run_to_exit(function: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = Command::new(function_bin(function))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PORT", "0")
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

/// On Cloud Run (`K_SERVICE` set) a function with no `RUNWAY_BACKEND` must not fall back to the
/// embedded backend, where there is no IAP and everyone is an admin: it refuses to start.
#[test]
fn on_cloud_run_a_function_without_a_backend_refuses_to_start() {
    for function in ["submit", "status", "worker"] {
        let mut child = Command::new(function_bin(function))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("PORT", "0")
            .env("K_SERVICE", format!("runway-{function}"))
            .env(
                "RUNWAY_DATA_DIR",
                std::env::temp_dir().join("runway-k-service"),
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the binary runs");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let code = loop {
            if let Some(status) = child.try_wait().expect("waiting on the binary") {
                break status.code();
            }
            if std::time::Instant::now() > deadline {
                child.kill().ok();
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let output = child.wait_with_output().expect("its output");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(code, Some(1), "{function} kept serving: {text}");
        assert!(text.contains("RUNWAY_BACKEND"), "{text}");
        assert!(text.contains("K_SERVICE"), "{text}");
    }
}

#[test]
fn on_google_cloud_a_function_names_every_missing_variable_and_exits() {
    let (code, output) = run_to_exit("worker", &[("RUNWAY_BACKEND", "gcp")]);
    assert_eq!(code, Some(1), "{output}");
    for name in ["GOOGLE_CLOUD_PROJECT", "RUNWAY_REGION"] {
        assert!(output.contains(name), "{name} not named: {output}");
    }

    let base = [
        ("RUNWAY_BACKEND", "gcp"),
        ("GOOGLE_CLOUD_PROJECT", "demo-project"),
        ("RUNWAY_REGION", "europe-west1"),
    ];
    let (code, output) = run_to_exit("submit", &base);
    assert_eq!(code, Some(1), "{output}");
    for name in [
        "RUNWAY_GITHUB_TOKEN",
        "RUNWAY_SOURCE_BUCKET",
        "RUNWAY_IMAGE_REPO",
        "RUNWAY_LOGS_BUCKET",
        "RUNWAY_PROJECT_NUMBER",
        "RUNWAY_ALLOWED_REPOS",
        "RUNWAY_IAP_AUDIENCE",
        "RUNWAY_WEBHOOK_URL",
        "RUNWAY_WEBHOOK_SECRET",
    ] {
        assert!(output.contains(name), "{name} not named: {output}");
    }
    assert!(
        !output.contains("stack backtrace") && !output.contains("Stack backtrace"),
        "{output}"
    );

    let (code, output) = run_to_exit("status", &[("RUNWAY_BACKEND", "cloud")]);
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("RUNWAY_BACKEND"), "{output}");
}

#[tokio::test]
async fn a_function_answers_health_and_ready_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.path().join("status.log");
    let mut child = Command::new(function_bin("status"))
        .env("PORT", port.to_string())
        .env("RUNWAY_DATA_DIR", dir.path().join("data"))
        .env_remove("RUNWAY_BACKEND")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        if let Ok(response) = client.get(format!("{base}/health")).send().await {
            break response;
        }
        assert!(Instant::now() < deadline, "status never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(health.status(), 200);
    let ready: serde_json::Value = client
        .get(format!("{base}/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["dependencies"]["store"]["state"], "ok", "{ready}");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "status did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    let output = std::fs::read_to_string(&log).unwrap();
    assert!(output.contains("stopped"), "{output}");
}
