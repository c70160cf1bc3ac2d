//! `filesystem.Filesystem` messages (envd-api.md §8.1).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::envd::connect::json::{self, Timestamp};
use crate::envd::connect::proto::{fields, merge_string_entry, DecodeError, Message, Writer};
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
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PathRequest {
    #[serde(deserialize_with = "json::nullable")]
    pub path: String,
}

pub type StatRequest = PathRequest;
pub type MakeDirRequest = PathRequest;
pub type RemoveRequest = PathRequest;

/// One entry, the answer of `Stat`, `MakeDir` and `Move`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryResponse {
    pub entry: EntryInfo,
}

pub type StatResponse = EntryResponse;
pub type MakeDirResponse = EntryResponse;
pub type MoveResponse = EntryResponse;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MoveRequest {
    #[serde(deserialize_with = "json::nullable")]
    pub source: String,
    #[serde(deserialize_with = "json::nullable")]
    pub destination: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ListDirRequest {
    #[serde(deserialize_with = "json::nullable")]
    pub path: String,
    #[serde(deserialize_with = "json::uint")]
    pub depth: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListDirResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<EntryInfo>,
}

/// An empty message (`RemoveResponse`, `RemoveWatcherResponse`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Empty {}

/// `WatchDirRequest` and `CreateWatcherRequest`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
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

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateWatcherResponse {
    pub watcher_id: String,
}

/// `GetWatcherEventsRequest` and `RemoveWatcherRequest`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WatcherRequest {
    #[serde(alias = "watcher_id", deserialize_with = "json::nullable")]
    pub watcher_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GetWatcherEventsResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<FilesystemEvent>,
}

// ---------------------------------------------------------------------------------------------
// The binary protobuf codec: field numbers and types of envd-api.md §8.1.

impl Message for EntryInfo {
    fn encode(&self, w: &mut Writer) {
        w.string(1, &self.name);
        w.int32(2, self.file_type.number());
        w.string(3, &self.path);
        w.int64(4, self.size);
        w.uint32(5, self.mode);
        w.string(6, &self.permissions);
        w.string(7, &self.owner);
        w.string(8, &self.group);
        if let Some(t) = &self.modified_time {
            w.message(9, t);
        }
        if let Some(target) = &self.symlink_target {
            w.string_always(10, target);
        }
        w.string_map(11, &self.metadata);
    }

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = EntryInfo::default();
        for field in fields(buf) {
            match field? {
                (1, v) => m.name = v.string()?,
                (2, v) => m.file_type = FileType::from_number(v.enum_number()?),
                (3, v) => m.path = v.string()?,
                (4, v) => m.size = v.int64()?,
                (5, v) => m.mode = v.uint32()?,
                (6, v) => m.permissions = v.string()?,
                (7, v) => m.owner = v.string()?,
                (8, v) => m.group = v.string()?,
                (9, v) => m.modified_time = Some(v.message()?),
                (10, v) => m.symlink_target = Some(v.string()?),
                (11, v) => merge_string_entry(&mut m.metadata, v)?,
                _ => {}
            }
        }
        Ok(m)
    }
}

impl Message for PathRequest {
    fn encode(&self, w: &mut Writer) {
        w.string(1, &self.path);
    }

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = PathRequest::default();
        for field in fields(buf) {
            if let (1, v) = field? {
                m.path = v.string()?;
            }
        }
        Ok(m)
    }
}

impl Message for EntryResponse {
    fn encode(&self, w: &mut Writer) {
        w.message(1, &self.entry);
    }

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = EntryResponse::default();
        for field in fields(buf) {
            if let (1, v) = field? {
                m.entry = v.message()?;
            }
        }
        Ok(m)
    }
}

impl Message for MoveRequest {
    fn encode(&self, w: &mut Writer) {
        w.string(1, &self.source);
        w.string(2, &self.destination);
    }

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = MoveRequest::default();
        for field in fields(buf) {
            match field? {
                (1, v) => m.source = v.string()?,
                (2, v) => m.destination = v.string()?,
                _ => {}
            }
        }
        Ok(m)
    }
}

impl Message for ListDirRequest {
    fn encode(&self, w: &mut Writer) {
        w.string(1, &self.path);
        w.uint32(2, self.depth);
    }

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = ListDirRequest::default();
        for field in fields(buf) {
            match field? {
                (1, v) => m.path = v.string()?,
                (2, v) => m.depth = v.uint32()?,
                _ => {}
            }
        }
        Ok(m)
    }
}

impl Message for ListDirResponse {
    fn encode(&self, w: &mut Writer) {
        for entry in &self.entries {
            w.message(1, entry);
        }
    }

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = ListDirResponse::default();
        for field in fields(buf) {
            if let (1, v) = field? {
                m.entries.push(v.message()?);
            }
        }
        Ok(m)
    }
}

impl Message for Empty {
    fn encode(&self, _: &mut Writer) {}

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        // Still walked: a malformed body is an error even for an empty message.
        for field in fields(buf) {
            field?;
        }
        Ok(Empty {})
    }
}

impl Message for WatchRequest {
    fn encode(&self, w: &mut Writer) {
        w.string(1, &self.path);
        w.bool(2, self.recursive);
        w.bool(3, self.include_entry);
        w.bool(4, self.allow_network_mounts);
    }

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = WatchRequest::default();
        for field in fields(buf) {
            match field? {
                (1, v) => m.path = v.string()?,
                (2, v) => m.recursive = v.bool()?,
                (3, v) => m.include_entry = v.bool()?,
                (4, v) => m.allow_network_mounts = v.bool()?,
                _ => {}
            }
        }
        Ok(m)
    }
}

impl Message for FilesystemEvent {
    fn encode(&self, w: &mut Writer) {
        w.string(1, &self.name);
        w.int32(2, self.event_type.number());
        if let Some(entry) = &self.entry {
            w.message(3, entry);
        }
    }

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = FilesystemEvent::default();
        for field in fields(buf) {
            match field? {
                (1, v) => m.name = v.string()?,
                (2, v) => m.event_type = EventType::from_number(v.enum_number()?),
                (3, v) => m.entry = Some(v.message()?),
                _ => {}
            }
        }
        Ok(m)
    }
}

/// Oneof `event`: `start` = 1, `filesystem` = 2, `keepalive` = 3.
impl Message for WatchDirResponse {
    fn encode(&self, w: &mut Writer) {
        match self {
            WatchDirResponse::Start {} => w.empty_message(1),
            WatchDirResponse::Filesystem(event) => w.message(2, event.as_ref()),
            WatchDirResponse::Keepalive {} => w.empty_message(3),
        }
    }

    /// A message without any member set has no Rust form: an error (only clients decode it).
    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut event = None;
        for field in fields(buf) {
            match field? {
                (1, v) => event = Some(v.empty().map(|()| WatchDirResponse::Start {})?),
                (2, v) => event = Some(WatchDirResponse::Filesystem(Box::new(v.message()?))),
                (3, v) => event = Some(v.empty().map(|()| WatchDirResponse::Keepalive {})?),
                _ => {}
            }
        }
        event.ok_or_else(|| DecodeError("WatchDirResponse: no event set".into()))
    }
}

impl Message for CreateWatcherResponse {
    fn encode(&self, w: &mut Writer) {
        w.string(1, &self.watcher_id);
    }

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = CreateWatcherResponse::default();
        for field in fields(buf) {
            if let (1, v) = field? {
                m.watcher_id = v.string()?;
            }
        }
        Ok(m)
    }
}

impl Message for WatcherRequest {
    fn encode(&self, w: &mut Writer) {
        w.string(1, &self.watcher_id);
    }

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = WatcherRequest::default();
        for field in fields(buf) {
            if let (1, v) = field? {
                m.watcher_id = v.string()?;
            }
        }
        Ok(m)
    }
}

impl Message for GetWatcherEventsResponse {
    fn encode(&self, w: &mut Writer) {
        for event in &self.events {
            w.message(1, event);
        }
    }

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = GetWatcherEventsResponse::default();
        for field in fields(buf) {
            if let (1, v) = field? {
                m.events.push(v.message()?);
            }
        }
        Ok(m)
    }
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

    fn entry() -> EntryInfo {
        EntryInfo {
            name: "b.txt".into(),
            file_type: FileType::File,
            path: "/a/b.txt".into(),
            size: 5_000_000_000,
            mode: 0o644,
            permissions: "-rw-r--r--".into(),
            owner: "user".into(),
            group: "user".into(),
            modified_time: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 123,
            }),
            symlink_target: Some(String::new()),
            metadata: [("k".to_string(), "v".to_string())].into_iter().collect(),
        }
    }

    #[test]
    fn every_message_round_trips_in_binary() {
        use crate::envd::connect::proto::assert_round_trip;
        assert_round_trip(&entry());
        assert_round_trip(&EntryInfo::default());
        assert_round_trip(&PathRequest { path: "/p".into() });
        assert_round_trip(&EntryResponse { entry: entry() });
        assert_round_trip(&MoveRequest {
            source: "/a".into(),
            destination: "/b".into(),
        });
        assert_round_trip(&ListDirRequest {
            path: "/p".into(),
            depth: 3,
        });
        assert_round_trip(&ListDirResponse {
            entries: vec![entry(), EntryInfo::default()],
        });
        assert_round_trip(&Empty {});
        assert_round_trip(&WatchRequest {
            path: "/p".into(),
            recursive: true,
            include_entry: false,
            allow_network_mounts: true,
        });
        let event = FilesystemEvent {
            name: "b.txt".into(),
            event_type: EventType::Chmod,
            entry: Some(entry()),
        };
        assert_round_trip(&event);
        assert_round_trip(&WatchDirResponse::Start {});
        assert_round_trip(&WatchDirResponse::Keepalive {});
        assert_round_trip(&WatchDirResponse::Filesystem(Box::new(event.clone())));
        assert_round_trip(&CreateWatcherResponse {
            watcher_id: "w1".into(),
        });
        assert_round_trip(&WatcherRequest {
            watcher_id: "w1".into(),
        });
        assert_round_trip(&GetWatcherEventsResponse {
            events: vec![event, FilesystemEvent::default()],
        });
    }

    #[test]
    fn binary_forms_follow_the_field_table() {
        // `type` = 2 as a varint, `size` = 4 as int64, an empty optional target still written.
        let entry = EntryInfo {
            file_type: FileType::Directory,
            size: 300,
            symlink_target: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(entry.to_bytes(), [0x10, 2, 0x20, 0xac, 0x02, 0x52, 0]);
        assert_eq!(WatchDirResponse::Keepalive {}.to_bytes(), [0x1a, 0]);
        // A proto3 default-valued message field is still present when set.
        assert_eq!(
            EntryResponse::default().to_bytes(),
            [0x0a, 0],
            "entry is always sent"
        );
        // Unknown enum numbers read as the zero value; a wrong wire type is an error.
        assert_eq!(
            FilesystemEvent::decode(&[0x10, 99]).map(|e| e.event_type),
            Ok(EventType::Unspecified)
        );
        assert!(PathRequest::decode(&[0x08, 1]).is_err());
        assert!(WatchDirResponse::decode(&[]).is_err());
    }
}
