//! API keys: minted by operators, checked on every node; required when the cluster
//! says so; operator routes need the admin key instead.

use std::time::Duration;

use anyhow::Result;
use boxoffice_tests::{ClusterOpts, TestCluster, ADMIN_KEY};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_api_keys_are_minted_by_operators_and_checked_everywhere() -> Result<()> {
    let (c, _) = TestCluster::start_ready(ClusterOpts {
        require_api_key: true,
        ..ClusterOpts::default()
    })
    .await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let venues = |node: u64, key: Option<&str>| {
        let mut rb = http.get(format!("{}/v1/venues", c.node(node).url()));
        if let Some(k) = key {
            rb = rb.header("x-api-key", k);
        }
        rb.send()
    };
    let code = |v: &Value| v["error"]["code"].as_str().unwrap_or_default().to_string();

    let resp = venues(1, None).await?;
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(code(&resp.json().await?), "API_KEY_REQUIRED");

    // Operator routes take the admin key alone.
    let resp = http
        .post(format!("{}/v1/admin/api-keys", c.node(1).url()))
        .header("x-admin-key", ADMIN_KEY)
        .json(&json!({"name": "box office app"}))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 201);
    let created: Value = resp.json().await?;
    let key = created["api_key"].as_str().unwrap_or_default().to_string();
    assert!(key.starts_with("bo_") && key.len() > 40, "{created}");
    let resp = http
        .post(format!("{}/v1/admin/api-keys", c.node(1).url()))
        .json(&json!({"name": "no admin key"}))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 401);

    // The key works on every node at once (another node catches up on a miss).
    for node in c.ids() {
        let resp = venues(node, Some(&key)).await?;
        assert_eq!(resp.status().as_u16(), 200, "node {node}");
    }
    let resp = venues(2, Some("bo_not-a-real-key")).await?;
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(code(&resp.json().await?), "INVALID_API_KEY");

    // Health and metrics never need one.
    assert_eq!(
        http.get(format!("{}/health", c.node(3).url()))
            .send()
            .await?
            .status()
            .as_u16(),
        200
    );
    Ok(())
}
