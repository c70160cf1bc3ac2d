//! `filesystem.Filesystem` messages (envd-api.md §8.1).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::envd::connect::json::{self, Timestamp};
use crate::envd::connect::Keepalive;
use crate::proto_enum;

proto_enum! {
    /// What an entry is. envd types a symlink by its target (`File`, `Directory`, or
    /// `Unspecified` when it dangles) and tells it apart by `symlink_target`; `Symlink` is in the
    /// protocol (and both SDKs map it) but envd never sends it, and neither does kernelbox.
    pub enum FileType {
        Unspecified = 0 => "FILE_TYPE_UNSPECIFIED",
        File = 1 => "FILE_TYPE_FILE",
        Directory = 2 => "FILE_TYPE_DIRECTORY",
        Symlink = 3 => "FILE_TYPE_SYMLINK",
    }
}

proto_enum! {
    /// What happened to a watched entry (fsnotify's operations).
    pub enum EventType {
        Unspecified = 0 => "EVENT_TYPE_UNSPECIFIED",
        Create = 1 => "EVENT_TYPE_CREATE",
        Write = 2 => "EVENT_TYPE_WRITE",
        Remove = 3 => "EVENT_TYPE_REMOVE",
        Rename = 4 => "EVENT_TYPE_RENAME",
        Chmod = 5 => "EVENT_TYPE_CHMOD",
    }
}

/// One filesystem entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryInfo {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(rename = "type", skip_serializing_if = "json::is_default")]
    pub file_type: FileType,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
    #[serde(
        serialize_with = "json::int64_string",
        skip_serializing_if = "json::is_default"
    )]
    pub size: i64,
    /// The permission bits (Go's `FileMode.Perm()`), e.g. `0o644`.
    #[serde(skip_serializing_if = "json::is_default")]
    pub mode: u32,
    /// Go's `FileMode.String()`, e.g. `-rw-r--r--`, `drwxr-xr-x`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub permissions: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub owner: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified_time: Option<Timestamp>,
    /// For a symlink: the absolute path it points to (optional field: present when set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
    /// The entry's `user.e2b.*` extended attributes, without the prefix.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// A path, for `Stat`, `MakeDir` and `Remove`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PathRequest {
    #[serde(deserialize_with = "json::nullable")]
    pub path: String,
}

pub type StatRequest = PathRequest;
pub type MakeDirRequest = PathRequest;
pub type RemoveRequest = PathRequest;

/// One entry, the answer of `Stat`, `MakeDir` and `Move`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryResponse {
    pub entry: EntryInfo,
}

pub type StatResponse = EntryResponse;
pub type MakeDirResponse = EntryResponse;
pub type MoveResponse = EntryResponse;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MoveRequest {
    #[serde(deserialize_with = "json::nullable")]
    pub source: String,
    #[serde(deserialize_with = "json::nullable")]
    pub destination: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ListDirRequest {
    #[serde(deserialize_with = "json::nullable")]
    pub path: String,
    #[serde(deserialize_with = "json::uint")]
    pub depth: u32,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListDirResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<EntryInfo>,
}

/// An empty message (`RemoveResponse`, `RemoveWatcherResponse`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Empty {}

/// `WatchDirRequest` and `CreateWatcherRequest`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WatchRequest {
    #[serde(deserialize_with = "json::nullable")]
    pub path: String,
    #[serde(deserialize_with = "json::nullable")]
    pub recursive: bool,
    #[serde(alias = "include_entry", deserialize_with = "json::nullable")]
    pub include_entry: bool,
    #[serde(alias = "allow_network_mounts", deserialize_with = "json::nullable")]
    pub allow_network_mounts: bool,
}

pub type WatchDirRequest = WatchRequest;
pub type CreateWatcherRequest = WatchRequest;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FilesystemEvent {
    /// Relative to the watched directory.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(rename = "type", skip_serializing_if = "json::is_default")]
    pub event_type: EventType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<EntryInfo>,
}

/// One message of the `WatchDir` stream (a oneof).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum WatchDirResponse {
    Start {},
    Filesystem(Box<FilesystemEvent>),
    Keepalive {},
}

impl Keepalive for WatchDirResponse {
    fn keepalive() -> WatchDirResponse {
        WatchDirResponse::Keepalive {}
    }
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateWatcherResponse {
    pub watcher_id: String,
}

/// `GetWatcherEventsRequest` and `RemoveWatcherRequest`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WatcherRequest {
    #[serde(alias = "watcher_id", deserialize_with = "json::nullable")]
    pub watcher_id: String,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GetWatcherEventsResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<FilesystemEvent>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_forms() {
        let event = WatchDirResponse::Filesystem(Box::new(FilesystemEvent {
            name: "a/b.txt".into(),
            event_type: EventType::Write,
            entry: None,
        }));
        assert_eq!(
            serde_json::to_string(&event).expect("json"),
            r#"{"filesystem":{"name":"a/b.txt","type":"EVENT_TYPE_WRITE"}}"#
        );
        assert_eq!(
            serde_json::to_string(&WatchDirResponse::Start {}).expect("json"),
            r#"{"start":{}}"#
        );
        let entry = EntryInfo {
            name: "x".into(),
            file_type: FileType::File,
            size: 4096,
            symlink_target: None,
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&entry).expect("json"),
            r#"{"name":"x","type":"FILE_TYPE_FILE","size":"4096"}"#
        );
        let req: WatchRequest =
            serde_json::from_str(r#"{"path":"/p","recursive":true,"include_entry":true}"#)
                .expect("snake_case");
        assert!(req.recursive && req.include_entry && !req.allow_network_mounts);
        let req: WatcherRequest = serde_json::from_str(r#"{"watcherId":"w"}"#).expect("camel");
        assert_eq!(req.watcher_id, "w");
    }
}
