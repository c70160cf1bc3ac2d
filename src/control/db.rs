//! The control plane's records in SQLite: one row per sandbox, from create to its end (kept
//! after it, with the reason). The in-memory view in [`super::sandboxes`] is the fast path; this
//! is what a restart reads back, and what tells it which sandboxes it must reclaim.
//!
//! One connection behind a mutex: every statement is a single-row read or write taking
//! microseconds, far below the cost of the sandbox operations around it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

/// Why a sandbox ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Its deadline passed.
    Timeout,
    /// `DELETE /sandboxes/{id}`.
    Kill,
    /// Its agent (init) was ended by the OOM killer: the sandbox ran out of memory.
    Oom,
    /// Its agent (init) died on its own otherwise (a crash, or killed from inside).
    InitDied,
    /// `serve` stopped or restarted while it ran; reclaimed on the next start.
    Restart,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Timeout => "timeout",
            EndReason::Kill => "kill",
            EndReason::Oom => "oom",
            EndReason::InitDied => "init_died",
            EndReason::Restart => "restart",
        }
    }
}

/// One sandbox as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: String,
    pub template_id: String,
    pub client_id: String,
    /// Milliseconds since the epoch.
    pub started_at: i64,
    /// The deadline, in milliseconds since the epoch.
    pub end_at: i64,
    pub metadata: BTreeMap<String, String>,
    pub cpu_count: u32,
    pub memory_mb: u64,
    pub envd_access_token: String,
    /// `None` while it runs.
    pub ended: Option<(i64, String)>,
}

pub struct Db {
    conn: Mutex<Connection>,
}

/// The schema; `IF NOT EXISTS` so opening is idempotent.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sandboxes (
    id TEXT PRIMARY KEY,
    template_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    end_at INTEGER NOT NULL,
    metadata TEXT NOT NULL,
    cpu_count INTEGER NOT NULL,
    memory_mb INTEGER NOT NULL,
    envd_access_token TEXT NOT NULL,
    ended_at INTEGER,
    end_reason TEXT
);
CREATE INDEX IF NOT EXISTS sandboxes_running ON sandboxes (ended_at);
";

impl Db {
    pub fn open(path: &Path) -> rusqlite::Result<Db> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Db {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(&self, r: &Record) -> rusqlite::Result<()> {
        let metadata = serde_json::to_string(&r.metadata).unwrap_or_else(|_| "{}".into());
        self.conn().execute(
            "INSERT INTO sandboxes (id, template_id, client_id, started_at, end_at, metadata,
                 cpu_count, memory_mb, envd_access_token) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                r.id,
                r.template_id,
                r.client_id,
                r.started_at,
                r.end_at,
                metadata,
                r.cpu_count,
                r.memory_mb as i64,
                r.envd_access_token
            ],
        )?;
        Ok(())
    }

    pub fn set_deadline(&self, id: &str, end_at: i64) -> rusqlite::Result<()> {
        self.conn().execute(
            "UPDATE sandboxes SET end_at = ?2 WHERE id = ?1",
            params![id, end_at],
        )?;
        Ok(())
    }

    /// Marks a sandbox ended (once: a later call keeps the first reason).
    pub fn end(&self, id: &str, at: i64, reason: EndReason) -> rusqlite::Result<()> {
        self.conn().execute(
            "UPDATE sandboxes SET ended_at = ?2, end_reason = ?3 WHERE id = ?1 AND ended_at IS NULL",
            params![id, at, reason.as_str()],
        )?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> rusqlite::Result<Option<Record>> {
        self.conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM sandboxes WHERE id = ?1"),
                params![id],
                row,
            )
            .optional()
    }

    /// Sandboxes not marked ended.
    pub fn running(&self) -> rusqlite::Result<Vec<Record>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM sandboxes WHERE ended_at IS NULL ORDER BY started_at"
        ))?;
        let rows = stmt.query_map([], row)?;
        rows.collect()
    }
}

const COLUMNS: &str = "id, template_id, client_id, started_at, end_at, metadata, cpu_count, \
                       memory_mb, envd_access_token, ended_at, end_reason";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
    let metadata: String = r.get(5)?;
    let ended_at: Option<i64> = r.get(9)?;
    let reason: Option<String> = r.get(10)?;
    Ok(Record {
        id: r.get(0)?,
        template_id: r.get(1)?,
        client_id: r.get(2)?,
        started_at: r.get(3)?,
        end_at: r.get(4)?,
        metadata: serde_json::from_str(&metadata).unwrap_or_default(),
        cpu_count: r.get(6)?,
        memory_mb: r.get::<_, i64>(7)? as u64,
        envd_access_token: r.get(8)?,
        ended: ended_at.map(|at| (at, reason.unwrap_or_default())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening_and_keep_their_first_end() {
        let dir = std::env::temp_dir().join(format!("kb-db-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("state.db");
        let record = Record {
            id: "abc".into(),
            template_id: "base".into(),
            client_id: "kernelbox".into(),
            started_at: 1000,
            end_at: 301_000,
            metadata: [("k".to_string(), "v".to_string())].into(),
            cpu_count: 2,
            memory_mb: 512,
            envd_access_token: "t".into(),
            ended: None,
        };
        {
            let db = Db::open(&path).expect("open");
            db.insert(&record).expect("insert");
            db.set_deadline("abc", 5000).expect("deadline");
        }
        let db = Db::open(&path).expect("reopen");
        let running = db.running().expect("running");
        assert_eq!(running.len(), 1);
        assert_eq!(running[0].end_at, 5000);
        assert_eq!(running[0].metadata["k"], "v");
        db.end("abc", 6000, EndReason::Restart).expect("end");
        db.end("abc", 7000, EndReason::Kill).expect("end again");
        assert!(db.running().expect("running").is_empty());
        let ended = db.get("abc").expect("get").expect("row");
        assert_eq!(ended.ended, Some((6000, "restart".to_string())));
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
