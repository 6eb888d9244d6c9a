//! Payment methods against a 3-node cluster through every node: add (201, the
//! first is the default; 400 INVALID_PAYMENT_METHOD for a token the gateway does
//! not know; 422 for a non-card), list from any node's catalog replica, delete
//! (204; 404 for another user's or an unknown one), default promotion, 401 without
//! a session token.

use std::time::Duration;

use anyhow::Result;
use boxoffice_tests::{code, s, user, wait_for, ClusterOpts, TestCluster};
use serde_json::{json, Value};

fn ids_and_defaults(list: &Value) -> Vec<(String, bool)> {
    list["payment_methods"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|pm| (s(&pm["payment_method_id"]), pm["is_default"] == json!(true)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_methods_through_every_node() -> Result<()> {
    let (c, _) = TestCluster::start_ready(ClusterOpts::default()).await?;
    let (n1, n2, n3) = (c.client(1), c.client(2), c.client(3));
    let a = user(&n1, "payer").await?;
    let b = user(&n2, "other").await?;

    let visa = n2
        .add_payment_method(
            &a,
            &json!({"type": "CARD", "card_token": "tok_visa_4242",
                    "billing_address": {"line1": "1 Main St", "city": "Springfield"}}),
        )
        .await?;
    assert_eq!(visa["card_brand"], json!("Visa"));
    assert_eq!(visa["card_last_four"], json!("4242"));
    assert_eq!(visa["type"], json!("CARD"));
    assert!(s(&visa["expiry"]).contains('/'), "{visa}");
    assert_eq!(visa["is_default"], json!(true));
    let mc = n3
        .add_payment_method(&a, &json!({"type": "CARD", "card_token": "tok_mastercard"}))
        .await?;
    assert_eq!(
        (mc["card_brand"].clone(), mc["is_default"].clone()),
        (json!("Mastercard"), json!(false))
    );
    // A card Stripe declines at charge time is still a card.
    let declined = n1
        .add_payment_method(
            &a,
            &json!({"type": "CARD", "card_token": "tok_chargeDeclined"}),
        )
        .await?;
    assert_eq!(declined["card_last_four"], json!("0002"));

    // 400 for an unknown token, 422 for another type, 401 without a token.
    let e = n1
        .add_payment_method(&a, &json!({"type": "CARD", "card_token": "tok_bogus"}))
        .await
        .unwrap_err();
    assert_eq!(code(&e), (400, "INVALID_PAYMENT_METHOD".into()));
    let e = n1
        .add_payment_method(&a, &json!({"type": "BANK", "card_token": "tok_visa"}))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(422));
    let e = n1
        .add_payment_method("", &json!({"type": "CARD", "card_token": "tok_visa"}))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401));

    // Every node lists the same three (catalog replicas catch up), oldest first.
    let want = vec![
        (s(&visa["payment_method_id"]), true),
        (s(&mc["payment_method_id"]), false),
        (s(&declined["payment_method_id"]), false),
    ];
    for id in c.ids() {
        let node = c.client(id);
        let want = want.clone();
        let a = a.clone();
        wait_for(Duration::from_secs(10), "the list on every node", || {
            let (node, want, a) = (node.clone(), want.clone(), a.clone());
            async move {
                let got = ids_and_defaults(&node.payment_methods(&a).await?);
                Ok((got == want).then_some(()))
            }
        })
        .await?;
    }
    assert_eq!(ids_and_defaults(&n3.payment_methods(&b).await?), vec![]);

    // Another user's method is not found; the owner deletes the default and the
    // oldest remaining one becomes the default.
    let e = n2
        .delete_payment_method(&b, &s(&visa["payment_method_id"]))
        .await
        .unwrap_err();
    assert_eq!(code(&e), (404, "NOT_FOUND".into()));
    n3.delete_payment_method(&a, &s(&visa["payment_method_id"]))
        .await?;
    let e = n1
        .delete_payment_method(&a, &s(&visa["payment_method_id"]))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404));
    let list = n3.payment_methods(&a).await?;
    assert_eq!(
        ids_and_defaults(&list),
        vec![
            (s(&mc["payment_method_id"]), true),
            (s(&declined["payment_method_id"]), false)
        ]
    );
    Ok(())
}
