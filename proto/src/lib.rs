//! The reid wire contract: `reid.v1` messages and the tonic clients and servers of the four
//! services (embedder, identity, ingester, trainer).

/// Generated code for package `reid.v1`.
pub mod v1 {
    tonic::include_proto!("reid.v1");
}

/// The encoded `FileDescriptorSet` of every reid proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/reid_descriptor.bin"));

pub mod time;

/// Default listen addresses of the services on one machine.
pub mod ports {
    pub const EMBEDDER: &str = "127.0.0.1:50051";
    pub const IDENTITY: &str = "127.0.0.1:50052";
    pub const INGESTER: &str = "127.0.0.1:50053";
    pub const TRAINER: &str = "127.0.0.1:50054";
}

pub use v1::*;

/// A box as the services keep it: `[x, y, width, height]` in pixels.
impl From<[f32; 4]> for v1::BoundingBox {
    fn from([x, y, width, height]: [f32; 4]) -> Self {
        v1::BoundingBox { x, y, width, height }
    }
}

impl From<&v1::BoundingBox> for [f32; 4] {
    fn from(b: &v1::BoundingBox) -> Self {
        [b.x, b.y, b.width, b.height]
    }
}
