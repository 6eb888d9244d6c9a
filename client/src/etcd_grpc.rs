//! The few calls of etcd's v3 gRPC API (`etcdserverpb.KV`) that `bench-peers`
//! needs: `Txn` for a hold and `Range` for the final check. This is how etcd's own
//! client (clientv3) talks to it; the JSON gateway on the same port adds a second
//! gRPC hop inside etcd for every request.
//!
//! The messages are written here with prost's derive, holding only the fields the
//! benchmark sets or reads (a decoder skips the rest); their tags are etcd's wire
//! format, as in its `rpc.proto` and `kv.proto`.

use std::time::Duration;

use anyhow::Context;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

/// `Compare.target`: the key's creation revision.
pub const TARGET_CREATE: i32 = 1;
/// `Compare.result`: equal.
pub const RESULT_EQUAL: i32 = 0;

/// `etcdserverpb.Compare`: `target` of `key` compared with a value (`result`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Compare {
    #[prost(int32, tag = "1")]
    pub result: i32,
    #[prost(int32, tag = "2")]
    pub target: i32,
    #[prost(bytes = "vec", tag = "3")]
    pub key: Vec<u8>,
    /// One arm of the `target_union` oneof; set (even to 0) it is sent.
    #[prost(int64, optional, tag = "5")]
    pub create_revision: Option<i64>,
}

/// `etcdserverpb.PutRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `etcdserverpb.RequestOp`, with only its `request_put` arm.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RequestOp {
    #[prost(message, optional, tag = "2")]
    pub request_put: Option<PutRequest>,
}

/// `etcdserverpb.TxnRequest`: if every compare holds, `success`, else `failure`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TxnRequest {
    #[prost(message, repeated, tag = "1")]
    pub compare: Vec<Compare>,
    #[prost(message, repeated, tag = "2")]
    pub success: Vec<RequestOp>,
    #[prost(message, repeated, tag = "3")]
    pub failure: Vec<RequestOp>,
}

/// `etcdserverpb.TxnResponse`, its outcome only.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TxnResponse {
    #[prost(bool, tag = "2")]
    pub succeeded: bool,
}

/// `etcdserverpb.RangeRequest`: the keys in `[key, range_end)`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
}

/// `mvccpb.KeyValue`, its key and value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "5")]
    pub value: Vec<u8>,
}

/// `etcdserverpb.RangeResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeResponse {
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
    #[prost(bool, tag = "3")]
    pub more: bool,
}

/// A gRPC connection to one etcd member (HTTP/2, every caller multiplexed on it,
/// as clientv3 does).
#[derive(Clone)]
pub struct KvClient {
    grpc: tonic::client::Grpc<Channel>,
}

impl KvClient {
    /// A client of the member at `url` (`http://host:port`); it connects on first use.
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(url.to_string())
            .with_context(|| format!("{url} is not an endpoint"))?
            .tcp_nodelay(true)
            .timeout(timeout)
            .connect_lazy();
        Ok(Self {
            // The final check reads every held seat in one answer: past tonic's
            // 4 MiB default from about 45,000 seats.
            grpc: tonic::client::Grpc::new(channel).max_decoding_message_size(usize::MAX),
        })
    }

    async fn unary<Q, R>(&self, path: &'static str, req: Q) -> Result<R, tonic::Status>
    where
        Q: prost::Message + Send + Sync + 'static,
        R: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = self.grpc.clone();
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let codec = tonic_prost::ProstCodec::<Q, R>::default();
        let reply = grpc
            .unary(
                tonic::Request::new(req),
                PathAndQuery::from_static(path),
                codec,
            )
            .await?;
        Ok(reply.into_inner())
    }

    /// `KV/Txn`.
    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, tonic::Status> {
        self.unary("/etcdserverpb.KV/Txn", req).await
    }

    /// `KV/Range` (linearizable).
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, tonic::Status> {
        self.unary("/etcdserverpb.KV/Range", req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// "Never created" must reach etcd as an explicit `create_revision = 0` (field 5,
    /// varint 0): left out, the oneof is unset and etcd compares nothing.
    #[test]
    fn a_zero_create_revision_is_on_the_wire() {
        let c = Compare {
            result: RESULT_EQUAL,
            target: TARGET_CREATE,
            key: b"k".to_vec(),
            create_revision: Some(0),
        };
        // target = 1 (tag 2), key "k" (tag 3), create_revision = 0 (tag 5); result
        // EQUAL is proto3's default and is left out.
        assert_eq!(
            c.encode_to_vec(),
            vec![0x10, 0x01, 0x1a, 0x01, b'k', 0x28, 0x00]
        );
    }
}
