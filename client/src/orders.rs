//! The client's order, ticket and gate-scan calls.

use serde_json::Value;

use crate::{Client, Result};

impl Client {
    /// `POST /v1/orders` (with an `Idempotency-Key` if given).
    pub async fn create_order(
        &self,
        token: &str,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<Value> {
        let mut rb = self
            .http
            .post(format!("{}/v1/orders", self.base))
            .bearer_auth(token)
            .json(body);
        if let Some(k) = idempotency_key {
            rb = rb.header("idempotency-key", k);
        }
        Self::parse(rb.send().await?).await
    }

    /// `GET /v1/orders/{id}`.
    pub async fn order(&self, token: &str, id: &str) -> Result<Value> {
        Self::parse(
            self.http
                .get(format!("{}/v1/orders/{id}", self.base))
                .bearer_auth(token)
                .send()
                .await?,
        )
        .await
    }

    /// `POST /v1/orders/{id}/cancel`.
    pub async fn cancel_order(&self, token: &str, id: &str) -> Result<Value> {
        Self::parse(
            self.http
                .post(format!("{}/v1/orders/{id}/cancel", self.base))
                .bearer_auth(token)
                .send()
                .await?,
        )
        .await
    }

    /// `GET /v1/tickets?order_id=`.
    pub async fn tickets(&self, token: &str, order_id: &str) -> Result<Value> {
        Self::parse(
            self.http
                .get(format!("{}/v1/tickets", self.base))
                .query(&[("order_id", order_id)])
                .bearer_auth(token)
                .send()
                .await?,
        )
        .await
    }

    /// `GET /v1/tickets/{id}/download`: the PNG's bytes and content type.
    pub async fn download_ticket(&self, token: &str, id: &str) -> Result<(Vec<u8>, String)> {
        let resp = self
            .http
            .get(format!("{}/v1/tickets/{id}/download", self.base))
            .bearer_auth(token)
            .send()
            .await?;
        if !resp.status().is_success() {
            return Self::parse::<Value>(resp)
                .await
                .map(|_| (Vec::new(), String::new()));
        }
        let kind = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok((resp.bytes().await?.to_vec(), kind))
    }

    /// `POST /v1/tickets/scan` (admin key).
    pub async fn scan_ticket(&self, event_id: &str, barcode: &str) -> Result<Value> {
        let rb = self.admin(
            self.http
                .post(format!("{}/v1/tickets/scan", self.base))
                .json(&serde_json::json!({ "event_id": event_id, "barcode": barcode })),
        );
        Self::parse(rb.send().await?).await
    }
}

impl Client {
    /// `POST /v1/tickets/{id}/transfer`.
    pub async fn transfer_ticket(
        &self,
        token: &str,
        ticket_id: &str,
        email: &str,
    ) -> Result<Value> {
        Self::parse(
            self.http
                .post(format!("{}/v1/tickets/{ticket_id}/transfer", self.base))
                .bearer_auth(token)
                .json(&serde_json::json!({ "recipient_email": email, "recipient_name": "Friend" }))
                .send()
                .await?,
        )
        .await
    }

    /// `POST /v1/transfers/{id}/accept`.
    pub async fn accept_transfer(&self, token: &str, transfer_id: &str) -> Result<Value> {
        Self::parse(
            self.http
                .post(format!("{}/v1/transfers/{transfer_id}/accept", self.base))
                .bearer_auth(token)
                .send()
                .await?,
        )
        .await
    }

    /// `DELETE /v1/transfers/{id}`.
    pub async fn cancel_transfer(&self, token: &str, transfer_id: &str) -> Result<()> {
        let resp = self
            .http
            .delete(format!("{}/v1/transfers/{transfer_id}", self.base))
            .bearer_auth(token)
            .send()
            .await?;
        Self::no_content(resp).await
    }
}
