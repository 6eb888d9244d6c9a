//! Accounts and session tokens: register, login and `/v1/me` across nodes; every
//! kind of bad credential or forged token is a 401.

use std::time::Duration;

use anyhow::Result;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use boxoffice_tests::{code, wait_for, ClusterOpts, TestCluster};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_me_and_every_bad_token_is_refused() -> Result<()> {
    let (c, _) = TestCluster::start_ready(ClusterOpts {
        session_ttl_seconds: 3,
        ..ClusterOpts::default()
    })
    .await?;

    // Register through node 1, log in through node 2, ask who we are on node 3.
    let reg = c
        .client(1)
        .register("Fan@Example.com", "correct horse", "A Fan")
        .await?;
    assert_eq!(reg["email"], "fan@example.com");
    let user_id = reg["user_id"].as_str().unwrap_or_default().to_string();
    let login = c
        .client(2)
        .login("fan@example.com", "correct horse")
        .await?;
    assert_eq!(login["token_type"], "Bearer");
    assert_eq!(login["user_id"], user_id.as_str());
    assert_eq!(login["expires_in"], 3);
    let token = login["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let me = c.client(3).me(&token).await?;
    assert_eq!(
        me,
        json!({"user_id": user_id, "email": "fan@example.com", "name": "A Fan"})
    );

    // Registration refusals.
    let e = c
        .client(2)
        .register("FAN@example.com", "another one", "B")
        .await
        .unwrap_err();
    assert_eq!(code(&e), (409, "EMAIL_TAKEN".into()));
    let e = c
        .client(2)
        .register("not-an-email", "long enough", "B")
        .await
        .unwrap_err();
    assert_eq!(code(&e), (422, "VALIDATION_FAILED".into()));
    let e = c
        .client(2)
        .register("b@example.com", "short", "B")
        .await
        .unwrap_err();
    assert_eq!(code(&e), (422, "VALIDATION_FAILED".into()));

    // An Idempotency-Key names a registration of one email: its retry (same
    // password) gets the first outcome; the same key with another password is
    // someone else's attempt at a taken email, and another email is its own.
    let http = reqwest::Client::new();
    let register = |email: &'static str, password: &'static str| {
        http.post(format!("{}/v1/auth/register", c.client(1).base()))
            .header("idempotency-key", "signup-1")
            .json(&json!({"email": email, "password": password, "name": "K"}))
            .send()
    };
    let first: Value = register("key@example.com", "long enough")
        .await?
        .json()
        .await?;
    let retry = register("key@example.com", "long enough").await?;
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.json::<Value>().await?, first);
    let guess = register("key@example.com", "a guess at it").await?;
    assert_eq!(guess.status(), 409);
    let guess: Value = guess.json().await?;
    assert_eq!(guess["error"]["code"], "EMAIL_TAKEN");
    let other = register("other@example.com", "long enough").await?;
    assert_eq!(other.status(), 201);
    let other: Value = other.json().await?;
    assert_eq!(other["email"], "other@example.com");
    assert_ne!(other["user_id"], first["user_id"]);

    // Wrong password and unknown email: the same 401.
    for (email, password) in [
        ("fan@example.com", "wrong horse"),
        ("nobody@example.com", "correct horse"),
    ] {
        let e = c.client(1).login(email, password).await.unwrap_err();
        assert_eq!(code(&e), (401, "INVALID_CREDENTIALS".into()), "{email}");
    }

    // Forged tokens.
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1])?)?;
    let mut elevated = claims.clone();
    elevated["sub"] = json!(uuid::Uuid::new_v4());
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&elevated)?),
        parts[2]
    );
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims)?)
    );
    let wrong_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"not the cluster's key, not at all"),
    )?;
    let mut other_issuer = claims.clone();
    other_issuer["iss"] = json!("boxoffice/another-cluster");
    let other_issuer = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&other_issuer)?),
        parts[2]
    );
    for (what, t) in [
        ("tampered", tampered.as_str()),
        ("alg none", alg_none.as_str()),
        ("wrong key", wrong_key.as_str()),
        ("other issuer", other_issuer.as_str()),
        ("garbage", "not.a.token"),
    ] {
        let e = c.client(1).me(t).await.unwrap_err();
        assert_eq!(code(&e), (401, "UNAUTHORIZED".into()), "{what}");
    }
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/me", c.node(1).url()))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 401, "no token");

    // The token expires (3 s here): then it is refused too.
    wait_for(
        Duration::from_secs(15),
        "the session token to expire",
        || async {
            Ok(match c.client(1).me(&token).await {
                Err(e) if code(&e) == (401, "UNAUTHORIZED".into()) => Some(()),
                _ => None,
            })
        },
    )
    .await?;
    Ok(())
}
