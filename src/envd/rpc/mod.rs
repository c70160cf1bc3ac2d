//! The messages of envd's Connect services, one file per protobuf package, written from the
//! field tables of envd-api.md §8.1 and §9.1 as serde structs that follow the proto3 JSON mapping
//! (rules in [`crate::envd::connect::json`]), each with its binary protobuf encoding beside it
//! (rules in [`crate::envd::connect::proto`]). Handlers live with their service, not here.

pub mod filesystem;
pub mod process;
