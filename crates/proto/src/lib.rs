//! Wire types of henvis: the prost messages and tonic stubs generated from proto/, and
//! the encoded file descriptor set for gRPC reflection and descriptor-driven policy.
//!
//! Wire types are not domain types: services convert them at the edge. This crate holds
//! no logic beyond the codec's two decode answers (see [`codec`]).
#![allow(missing_docs, clippy::all, clippy::pedantic)]

include!(concat!(env!("OUT_DIR"), "/henvis.rs"));

#[allow(missing_docs)]
pub mod codec;

/// The encoded `FileDescriptorSet` of every henvis proto file and its imports, custom
/// options included.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/henvis_descriptor.bin"));

/// Full name of the event message whose oneof `kind` names the message type.
pub const EVENT_MESSAGE: &str = "henvis.events.v1.Event";
