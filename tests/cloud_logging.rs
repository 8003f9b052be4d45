//! `CloudLogging` (the apps' runtime log on Google Cloud) through the official
//! `google-cloud-logging-v2` client against the fake Cloud Logging API
//! (`runway_tests::fake_cloud_logging`): the service's lines and no one else's, entries that
//! arrive late, and the project's read quota of 60 a minute.

use std::time::Duration;

use runway_core::domain::{AppName, Region};
use runway_core::ports::{LogError, LogRead, RuntimeLog};
use runway_gcp::{CloudLogging, CloudLoggingConfig};
use runway_tests::fake_cloud_logging::{FakeCloudLogging, FakeEntry, READS_PER_MINUTE};

const PROJECT: &str = "runway-test";
const REGION: &str = "europe-west1";

async fn reader(fake: &FakeCloudLogging, follow_every: Duration) -> anyhow::Result<CloudLogging> {
    let mut config = CloudLoggingConfig::new(PROJECT);
    config.endpoint = Some(fake.endpoint());
    config.anonymous = true;
    config.follow_every = follow_every;
    CloudLogging::new(config).await
}

fn hello() -> (AppName, Region) {
    (
        AppName::parse("hello").unwrap(),
        Region::parse(REGION, &[REGION.to_owned()]).unwrap(),
    )
}

fn line(text: &str) -> FakeEntry {
    FakeEntry::stdout(PROJECT, REGION, "hello", "hello-00001-abc", text)
}

fn texts(read: &LogRead) -> Vec<&str> {
    read.lines.iter().map(|line| line.text.as_str()).collect()
}

#[tokio::test]
async fn an_apps_log_is_its_services_lines_in_its_region_newest_last() -> anyhow::Result<()> {
    let fake = FakeCloudLogging::start().await?;
    fake.write(line("Collecting usage statistics").on("stderr"));
    fake.write(
        line("Starting new instance. Reason: DEPLOYMENT - New revision created.")
            .on("varlog/system"),
    );
    fake.write(line("You can now view your Streamlit app in your browser."));
    // Another app, the same app in another region, and another project: none of its lines.
    fake.write(FakeEntry::stdout(
        PROJECT,
        REGION,
        "other",
        "other-00001-xyz",
        "not mine",
    ));
    fake.write(FakeEntry::stdout(
        PROJECT,
        "us-central1",
        "hello",
        "hello-00001-def",
        "not here",
    ));
    fake.write(FakeEntry::stdout(
        "someone-else",
        REGION,
        "hello",
        "hello-00001-abc",
        "nor this",
    ));
    let log = reader(&fake, Duration::ZERO).await?;
    let (app, region) = hello();

    let read = log.tail(&app, &region, 10).await?;

    assert_eq!(
        texts(&read),
        [
            "Collecting usage statistics",
            "Starting new instance. Reason: DEPLOYMENT - New revision created.",
            "You can now view your Streamlit app in your browser."
        ]
    );
    let streams: Vec<&str> = read.lines.iter().map(|l| l.stream.as_str()).collect();
    assert_eq!(streams, ["stderr", "system", "stdout"]);
    assert!(read.lines.iter().all(|l| l.revision == "hello-00001-abc"));
    // The newest two only, still newest last.
    let two = log.tail(&app, &region, 2).await?;
    assert_eq!(
        texts(&two)[1],
        "You can now view your Streamlit app in your browser."
    );
    assert_eq!(two.lines.len(), 2);
    Ok(())
}

#[tokio::test]
async fn a_follower_gets_each_line_once_even_when_it_arrives_late() -> anyhow::Result<()> {
    let fake = FakeCloudLogging::start().await?;
    fake.write(line("first"));
    let log = reader(&fake, Duration::ZERO).await?;
    let (app, region) = hello();
    let start = log.tail(&app, &region, 100).await?;
    assert_eq!(texts(&start), ["first"]);

    // "late" is written before "prompt" but becomes readable only after it.
    fake.write_late(line("late"), Duration::from_millis(600));
    tokio::time::sleep(Duration::from_millis(5)).await;
    fake.write(line("prompt"));
    let mut seen = Vec::new();
    let mut cursor = start.cursor;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while seen.len() < 2 && tokio::time::Instant::now() < deadline {
        let read = log.after(&app, &region, &cursor, 100).await?;
        seen.extend(read.lines.iter().map(|line| line.text.clone()));
        cursor = read.cursor;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A few more looks bring nothing twice.
    for _ in 0..3 {
        let read = log.after(&app, &region, &cursor, 100).await?;
        seen.extend(read.lines.iter().map(|line| line.text.clone()));
        cursor = read.cursor;
    }

    assert_eq!(seen, ["prompt", "late"]);
    Ok(())
}

#[tokio::test]
async fn many_pages_following_one_app_cost_one_read_per_interval() -> anyhow::Result<()> {
    let fake = FakeCloudLogging::start().await?;
    fake.write(line("hello"));
    let every = Duration::from_millis(500);
    let log = reader(&fake, every).await?;
    let (app, region) = hello();

    // Twenty pages open the app at once, and follow it for three intervals.
    let mut pages = Vec::new();
    for _ in 0..20 {
        let (log, app, region) = (log.clone(), app.clone(), region.clone());
        pages.push(tokio::spawn(async move {
            let mut read = log.tail(&app, &region, 100).await?;
            let mut texts: Vec<String> = read.lines.iter().map(|l| l.text.clone()).collect();
            for _ in 0..3 {
                tokio::time::sleep(every).await;
                read = log.after(&app, &region, &read.cursor, 100).await?;
                texts.extend(read.lines.into_iter().map(|line| line.text));
            }
            anyhow::Ok(texts)
        }));
        if pages.len() == 10 {
            fake.write(line("while they follow"));
        }
    }
    for page in pages {
        let texts = page.await??;
        assert_eq!(
            texts,
            ["hello", "while they follow"],
            "every page, each line once"
        );
    }

    let (answered, refused) = fake.reads();
    assert_eq!(refused, 0);
    assert!(
        answered <= 6,
        "{answered} reads for 20 pages over 3 intervals: one per interval, not one per page"
    );
    Ok(())
}

#[tokio::test]
async fn a_project_out_of_read_quota_is_reported_with_the_wait() -> anyhow::Result<()> {
    let fake = FakeCloudLogging::start().await?;
    fake.write(line("hello"));
    let (app, region) = hello();
    // Someone else in the project (the Logs Explorer, a script) used the minute's reads.
    let others = reader(&fake, Duration::ZERO).await?;
    for _ in 0..READS_PER_MINUTE {
        others.tail(&app, &region, 1).await?;
    }

    let log = reader(&fake, Duration::ZERO).await?;
    let refused = log.tail(&app, &region, 10).await.expect_err("over quota");

    let LogError::Throttled {
        message,
        retry_after,
    } = refused
    else {
        panic!("not a throttle: {refused}");
    };
    assert!(message.contains("60 times a minute"), "{message}");
    assert!(retry_after >= Duration::from_secs(1), "{retry_after:?}");
    assert_eq!(fake.reads(), (READS_PER_MINUTE, 1));
    Ok(())
}
