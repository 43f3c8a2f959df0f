//! The `interop.v1` contract: messages and gRPC services of the interoperability link,
//! generated from `proto/interop/v1/*.proto` at build time.
//!
//! The contract only: the message types, the service clients and servers, the service names
//! and [`FILE_DESCRIPTOR_SET`] for reflection. The client library built on it (connecting,
//! deadlines, retries, resuming streams) is the `interop-client` crate (`proto/client`).

#![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]

pub mod codec;

pub mod v1 {
    tonic::include_proto!("interop.v1");
}

/// The encoded `FileDescriptorSet` of the whole contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/interop_descriptor.bin"));

/// Full gRPC service names, as clients and health checks spell them.
pub mod service_names {
    pub const SUBMISSION: &str = "interop.v1.SubmissionService";
    pub const FIELD_OFFICE: &str = "interop.v1.FieldOfficeService";
    pub const ADMIN: &str = "interop.v1.AdminService";
    pub const MATCHER: &str = "interop.v1.MatcherService";
    pub const CRIMINAL_HISTORY: &str = "interop.v1.CriminalHistoryService";
}
