//! Bad input gets a clear message, never a panic: unknown node ids, unreadable
//! configs, a data dir of another cluster, malformed admin bodies.

use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use boxoffice_tests::{node_binary, ClusterOpts, TestCluster, ADMIN_KEY};

fn run_node(args: &[&str]) -> Result<(i32, String)> {
    let out = Command::new(node_binary()?)
        .args(args)
        .env("RUST_LOG", "info")
        .output()?;
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    Ok((out.status.code().unwrap_or(-1), text))
}

#[test]
fn unknown_node_id_and_unreadable_config_are_clear_errors() -> Result<()> {
    let c = TestCluster::configure(ClusterOpts::default())?;
    let config = c.config_path.to_str().unwrap_or_default().to_string();

    let (code, text) = run_node(&["--config", &config, "--id", "9"])?;
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("node id 9 is not in the cluster file"),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");

    let (code, text) = run_node(&["--config", "/nonexistent/cluster.toml", "--id", "1"])?;
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("cannot read /nonexistent/cluster.toml"),
        "{text}"
    );

    let broken = c.dir.path().join("broken.toml");
    std::fs::write(&broken, "cluster_name = \n")?;
    let (code, text) = run_node(&["--config", broken.to_str().unwrap_or_default(), "--id", "1"])?;
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("broken.toml"), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_of_another_cluster_is_refused() -> Result<()> {
    let mut c = TestCluster::start(ClusterOpts::default())?;
    c.wait_healthy(Duration::from_secs(30)).await?;
    c.stop(1)?;
    // Same nodes and dirs, another cluster name.
    let other = c.dir.path().join("other.toml");
    let text = std::fs::read_to_string(&c.config_path)?
        .replace("cluster_name = \"test\"", "cluster_name = \"other\"");
    std::fs::write(&other, text)?;
    let (code, text) = run_node(&["--config", other.to_str().unwrap_or_default(), "--id", "1"])?;
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("belongs to node 1 of cluster \"test\""),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_admin_requests_get_the_error_format() -> Result<()> {
    let c = TestCluster::start(ClusterOpts::default())?;
    c.wait_healthy(Duration::from_secs(30)).await?;
    let url = format!("{}/v1/admin/venues", c.node(2).url());
    let http = reqwest::Client::new();
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            http.post(&url)
                .header("x-admin-key", ADMIN_KEY)
                .header("content-type", "application/json")
                .body("{\"name\":"),
            400,
            "VALIDATION_FAILED",
        ),
        (
            http.post(&url)
                .header("x-admin-key", ADMIN_KEY)
                .json(&serde_json::json!({"name": "x"})),
            400,
            "VALIDATION_FAILED",
        ),
        (
            http.post(&url).header("x-admin-key", ADMIN_KEY).body("{}"),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            http.post(&url)
                .header("x-admin-key", ADMIN_KEY)
                .json(&serde_json::json!({
                    "name": "x", "city": "y", "country": "US", "sections": []
                })),
            422,
            "VALIDATION_FAILED",
        ),
        (
            http.post(&url)
                .header("x-admin-key", ADMIN_KEY)
                .json(&serde_json::json!({
                    "name": "x", "city": "y", "country": "US",
                    "sections": [{"name": "Floor", "rows": [{"row": "A", "seats": -1}]}]
                })),
            400,
            "VALIDATION_FAILED",
        ),
        (
            http.post(&url).json(&serde_json::json!({})),
            401,
            "UNAUTHORIZED",
        ),
        (
            http.post(&url)
                .header("x-admin-key", "wrong")
                .json(&serde_json::json!({})),
            401,
            "UNAUTHORIZED",
        ),
        (
            http.post(&url)
                .header("x-admin-key", ADMIN_KEY)
                .header("content-type", "application/json")
                .body(vec![b' '; 2 << 20]),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            http.get(format!("{}/v1/nowhere", c.node(1).url())),
            404,
            "NOT_FOUND",
        ),
        (
            http.delete(format!("{}/health", c.node(1).url())),
            405,
            "METHOD_NOT_ALLOWED",
        ),
        (
            http.get(format!("{}/v1/venues/not-a-uuid", c.node(1).url())),
            400,
            "VALIDATION_FAILED",
        ),
        (
            http.get(format!(
                "{}/v1/venues/{}",
                c.node(1).url(),
                uuid::Uuid::new_v4()
            )),
            404,
            "NOT_FOUND",
        ),
    ];
    for (i, (req, status, code)) in cases.into_iter().enumerate() {
        let resp = req.send().await?;
        assert_eq!(resp.status().as_u16(), status, "case {i}");
        let header_id = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .expect("X-Request-ID on every response");
        let body: serde_json::Value = resp.json().await?;
        let err = &body["error"];
        assert_eq!(err["code"], code, "case {i}: {body}");
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "case {i}: {body}"
        );
        assert_eq!(err["request_id"], header_id.as_str(), "case {i}: {body}");
        assert!(
            err["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "case {i}: {body}"
        );
        assert!(err["details"].is_object(), "case {i}: {body}");
    }
    // Nothing of the above was written.
    assert!(c.client(1).venues().await?.venues.is_empty());
    Ok(())
}
