//! Black-box fuzzing of the public API with schemathesis (PyPI, installed by
//! `scripts/setup`) against a live 3-node cluster's own `/v1/openapi.json`: no 5xx,
//! every status code, content type, header and body as documented, and input that
//! violates the schema is refused with a 4xx.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use boxoffice_tests::boxoffice_client::{sample_event, NewVenue};
use boxoffice_tests::{ClusterOpts, TestCluster, ADMIN_KEY};

/// The pinned schemathesis of `scripts/setup`, or `$SCHEMATHESIS`.
fn schemathesis() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("SCHEMATHESIS") {
        return Ok(PathBuf::from(p));
    }
    let tools = std::env::var_os("BOXOFFICE_TOOLS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/boxoffice")))
        .context("neither BOXOFFICE_TOOLS nor HOME is set")?;
    let bin = tools.join("schemathesis-4.32.5/bin/schemathesis");
    if !bin.exists() {
        bail!(
            "{} is missing: run scripts/setup (it installs schemathesis from PyPI)",
            bin.display()
        );
    }
    Ok(bin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() -> Result<()> {
    let bin = schemathesis()?;
    // Limits high enough that the fuzzer explores rather than collects 429s (429 is
    // still a documented answer, and t80_limits tests it).
    let (c, leader) = TestCluster::start_ready(ClusterOpts {
        extra_toml: [
            "[rate_limits]",
            "search = { requests = 100000, window_seconds = 60 }",
            "event_details = { requests = 100000, window_seconds = 60 }",
            "seat_map = { requests = 100000, window_seconds = 60 }",
            "reserve = { requests = 100000, window_seconds = 60 }",
            "queue_status = { requests = 100000, window_seconds = 60 }",
            "authenticated = { requests = 100000, window_seconds = 60 }",
            "",
        ]
        .join("\n"),
        ..ClusterOpts::default()
    })
    .await?;
    // Through a follower, so writes are forwarded to the catalog leader.
    let node = c.other_than(leader);
    let client = c.client(node);
    client
        .register("fuzz@example.com", "fuzzing password", "Fuzz")
        .await?;
    let login = client.login("fuzz@example.com", "fuzzing password").await?;
    let token = login["access_token"]
        .as_str()
        .context("login without a token")?
        .to_string();
    // Real ids for the path parameters, most of the time, so the fuzzer reaches past
    // 404 (schemathesis dictionaries); the rest of the time it makes its own up.
    let venue = client
        .create_venue(&NewVenue::sample("Fuzz Arena", 2, 10), None)
        .await?;
    let event = client
        .create_event(&sample_event("Fuzz Night", &venue.venue_id, &["Floor"]))
        .await?;
    client.set_event_status(&event.event_id, "ON_SALE").await?;
    let hold = client
        .reserve(
            &token,
            &serde_json::json!({"event_id": event.event_id, "quantity": 2}),
            None,
        )
        .await?;
    let reservation = hold["reservation_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let report = tempfile::tempdir()?;
    let config = report.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            "[dictionaries.venues]\nvalues = [\"{}\"]\n\
             [dictionaries.events]\nvalues = [\"{}\"]\n\
             [dictionaries.reservations]\nvalues = [\"{}\"]\n\
             [parameters]\n\
             \"path.venue_id\" = {{ dictionary = \"venues\", probability = 0.7 }}\n\
             \"path.event_id\" = {{ dictionary = \"events\", probability = 0.7 }}\n\
             \"path.reservation_id\" = {{ dictionary = \"reservations\", probability = 0.7 }}\n",
            venue.venue_id, event.event_id, reservation
        ),
    )?;
    let url = format!("{}/v1/openapi.json", c.node(node).url());
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(&url)
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_headers_conformance,response_schema_conformance,negative_data_rejection",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "30",
            "--seed",
            "7",
            "--workers",
            "2",
            "--request-timeout",
            "10",
            "--no-color",
            "--header",
        ])
        .arg(format!("Authorization: Bearer {token}"))
        .arg("--header")
        .arg(format!("X-Admin-Key: {ADMIN_KEY}"))
        .arg("--report-dir")
        .arg(report.path())
        // Its caches (.schemathesis, .hypothesis) go to the temporary directory.
        .current_dir(report.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let run = tokio::time::timeout(Duration::from_secs(600), cmd.output())
        .await
        .context("schemathesis ran for more than 10 minutes")??;
    let out = String::from_utf8_lossy(&run.stdout);
    let err = String::from_utf8_lossy(&run.stderr);
    if !run.status.success() {
        bail!(
            "schemathesis failed ({}):\n{out}\n{err}\n--- node logs ---\n{}",
            run.status,
            c.log_tails(30)
        );
    }
    println!("{out}");
    // It must have exercised the API, not skipped it: "Test cases: N generated, ...".
    let generated: u64 = out
        .lines()
        .find_map(|l| l.trim().split_once(" generated,")?.0.parse().ok())
        .unwrap_or(0);
    assert!(
        generated >= 100,
        "schemathesis generated {generated} cases:\n{out}"
    );
    Ok(())
}
