//! Generated code of the peer protocol (`proto/peer.proto`): the gRPC service that
//! carries Raft traffic of every group and node-to-node request forwarding.

/// `boxoffice.peer.v1`: messages and the `Peer` service client and server.
pub mod peer {
    tonic::include_proto!("boxoffice.peer.v1");
}

pub use peer::peer_client::PeerClient;
pub use peer::peer_server::{Peer, PeerServer};
