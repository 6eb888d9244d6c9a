//! Rate limits (429 with the X-RateLimit headers, recovery after the window) and
//! overload (503 at once when a node's in-flight work is full).

use std::time::Duration;

use anyhow::Result;
use boxoffice_client::NewVenue;
use boxoffice_tests::{prometheus_value, wait_for, ClusterOpts, TestCluster};

fn header(resp: &reqwest::Response, name: &str) -> Option<u64> {
    resp.headers().get(name)?.to_str().ok()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_budget_runs_out_with_429_and_recovers() -> Result<()> {
    let (c, _) = TestCluster::start_ready(ClusterOpts {
        extra_toml: "[rate_limits]\nauthenticated = { requests = 3, window_seconds = 3 }\n".into(),
        ..ClusterOpts::default()
    })
    .await?;
    let client = c.client(1);
    client.register("a@example.com", "password a", "A").await?;
    client.register("b@example.com", "password b", "B").await?;
    let token = |v: serde_json::Value| v["access_token"].as_str().unwrap_or_default().to_string();
    let a = token(client.login("a@example.com", "password a").await?);
    let b = token(client.login("b@example.com", "password b").await?);
    let http = reqwest::Client::new();
    let me = |t: &str| {
        http.get(format!("{}/v1/me", c.node(1).url()))
            .bearer_auth(t.to_string())
            .send()
    };

    for remaining in [2, 1, 0] {
        let resp = me(&a).await?;
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(header(&resp, "x-ratelimit-limit"), Some(3));
        assert_eq!(header(&resp, "x-ratelimit-remaining"), Some(remaining));
        assert!(header(&resp, "x-ratelimit-reset").is_some());
    }
    let resp = me(&a).await?;
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(header(&resp, "x-ratelimit-remaining"), Some(0));
    assert!(header(&resp, "retry-after").is_some_and(|s| (1..=3).contains(&s)));
    let body: serde_json::Value = resp.json().await?;
    assert_eq!(body["error"]["code"], "RATE_LIMITED");

    // Another user is not affected; the first recovers after the window.
    assert_eq!(me(&b).await?.status().as_u16(), 200);
    wait_for(
        Duration::from_secs(10),
        "user A's budget to refill",
        || async { Ok((me(&a).await?.status().as_u16() == 200).then_some(())) },
    )
    .await?;

    // The cluster view reports each limit beside the spec's, and `boxoffice bench`
    // names the raised ones: 3 per 3 s lets a client do more than 1000 per hour.
    let view = c.view(1).await?;
    let scope = |s: &str| view.rate_limits.iter().find(|l| l.scope == s).cloned();
    let authenticated = scope("authenticated").expect("authenticated limit reported");
    assert_eq!(
        (authenticated.requests, authenticated.window_seconds),
        (3, 3)
    );
    assert_eq!(
        (
            authenticated.spec_requests,
            authenticated.spec_window_seconds
        ),
        (1000, 3600)
    );
    assert!(authenticated.raised());
    let reserve = scope("reserve").expect("reserve limit reported");
    assert_eq!((reserve.requests, reserve.window_seconds), (10, 60));
    assert!(!reserve.raised());
    let note = boxoffice_client::bench::rate_limits_note(&[c.client(1)]).await;
    assert_eq!(
        note,
        "rate limits (per client, per node): raised in this cluster's config: \
         authenticated 3/3 s (spec 1000/3600 s)"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_answers_503_at_once_instead_of_queueing() -> Result<()> {
    let (mut c, _) = TestCluster::start_ready(ClusterOpts {
        max_in_flight: 1,
        request_timeout_ms: 4000,
        ..ClusterOpts::default()
    })
    .await?;
    // Without a quorum a catalog write waits out its deadline, holding the one slot.
    c.kill(2)?;
    c.kill(3)?;
    let writer = c.client(1);
    let stuck = tokio::spawn(async move {
        writer
            .create_venue(&NewVenue::sample("stuck", 1, 1), None)
            .await
    });
    wait_for(
        Duration::from_secs(5),
        "the write to hold node 1's only slot",
        || async {
            let m = c.client(1).metrics().await?;
            Ok(prometheus_value(&m, "boxoffice_http_in_flight")
                .filter(|v| *v >= 2.0)
                .map(|_| ()))
        },
    )
    .await?;

    let resp = reqwest::Client::new()
        .get(format!("{}/v1/venues", c.node(1).url()))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 503);
    assert!(header(&resp, "retry-after").is_some());
    let body: serde_json::Value = resp.json().await?;
    assert_eq!(body["error"]["code"], "OVERLOADED");

    // The stuck write ends with 503 NO_LEADER; then the node serves again.
    let e = stuck.await?.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(503), Some("NO_LEADER")));
    assert!(c.client(1).venues().await.is_ok());
    Ok(())
}
