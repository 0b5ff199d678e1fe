//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`,
//! so a write that returned survives a crash or power cut. Calls run on the
//! blocking pool, one connection behind a mutex (writes are rare: a token
//! changes every few hours, not per request).

use super::crypto::Keys;
use super::record::{class_from, class_name};
use super::{Put, Record, StoreError};
use crate::vocab::TokenKey;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The SQLite store.
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    keys: Arc<Keys>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tokens (
    app TEXT NOT NULL,
    class TEXT NOT NULL,
    subject TEXT NOT NULL,
    version INTEGER NOT NULL,
    sealed BLOB NOT NULL,
    updated_unix INTEGER NOT NULL,
    PRIMARY KEY (app, class, subject)
) WITHOUT ROWID;";

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl SqliteStore {
    /// Opens (or creates) the file.
    pub async fn open(path: &Path, keys: Keys) -> Result<SqliteStore, String> {
        let path = path.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, String> {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            let conn = Connection::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            // Owner only: the tokens are encrypted, but the file is nobody else's business.
            // SQLite gives its -wal and -shm files the same mode.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| format!("cannot restrict {}: {e}", path.display()))?;
            }
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(|e| e.to_string())?;
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(|e| e.to_string())?;
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(|e| e.to_string())?;
            conn.execute_batch(SCHEMA)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(conn)
        })
        .await
        .map_err(|e| e.to_string())??;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            keys: Arc::new(keys),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &Keys) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (conn, keys) = (Arc::clone(&self.conn), Arc::clone(&self.keys));
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut c, &keys)
        })
        .await
        .map_err(unavailable)?
    }

    /// Every record.
    pub async fn load_all(&self) -> Result<Vec<Record>, StoreError> {
        self.run(|c, keys| {
            let mut stmt = c
                .prepare("SELECT app, class, subject, version, sealed FROM tokens")
                .map_err(unavailable)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Vec<u8>>(4)?,
                    ))
                })
                .map_err(unavailable)?;
            let mut out = Vec::new();
            for row in rows {
                let (app, class, subject, version, sealed) = row.map_err(unavailable)?;
                let Some(class) = class_from(&class) else { continue };
                let key = TokenKey::stored(app.into(), class, &subject);
                out.push(Record::open(keys, key, version as u64, &sealed)?);
            }
            Ok(out)
        })
        .await
    }

    /// One record.
    pub async fn get(&self, key: &TokenKey) -> Result<Option<Record>, StoreError> {
        let key = key.clone();
        self.run(move |c, keys| {
            let row = c
                .query_row(
                    "SELECT version, sealed FROM tokens WHERE app = ?1 AND class = ?2 AND subject = ?3",
                    params![&*key.app, class_name(key.class), key.subject()],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
                )
                .optional()
                .map_err(unavailable)?;
            row.map(|(v, sealed)| Record::open(keys, key, v as u64, &sealed))
                .transpose()
        })
        .await
    }

    /// Compare-and-swap write, durable when it returns.
    pub async fn put(&self, rec: &Record, expected: u64) -> Result<Put, StoreError> {
        let rec = rec.clone();
        self.run(move |c, keys| {
            let sealed = keys.seal(&Record::aad(&rec.key), &rec.body());
            let tx = c.transaction().map_err(unavailable)?;
            let (app, class, subject) = (&*rec.key.app, class_name(rec.key.class), rec.key.subject());
            let now = crate::vocab::unix_now() as i64;
            let changed = if expected == 0 {
                tx.execute(
                    "INSERT INTO tokens (app, class, subject, version, sealed, updated_unix) VALUES (?1, ?2, ?3, 1, ?4, ?5)
                     ON CONFLICT DO NOTHING",
                    params![app, class, subject, sealed, now],
                )
            } else {
                tx.execute(
                    "UPDATE tokens SET version = version + 1, sealed = ?4, updated_unix = ?5
                     WHERE app = ?1 AND class = ?2 AND subject = ?3 AND version = ?6",
                    params![app, class, subject, sealed, now, expected as i64],
                )
            }
            .map_err(unavailable)?;
            if changed == 1 {
                tx.commit().map_err(unavailable)?;
                return Ok(Put::Written(expected + 1));
            }
            let current = tx
                .query_row(
                    "SELECT version, sealed FROM tokens WHERE app = ?1 AND class = ?2 AND subject = ?3",
                    params![app, class, subject],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
                )
                .optional()
                .map_err(unavailable)?;
            drop(tx);
            let current = current.map(|(v, s)| Record::open(keys, rec.key.clone(), v as u64, &s)).transpose()?;
            Ok(Put::Conflict(current))
        })
        .await
    }

    /// Removes a record.
    pub async fn delete(&self, key: &TokenKey) -> Result<bool, StoreError> {
        let key = key.clone();
        self.run(move |c, _| {
            let n = c
                .execute(
                    "DELETE FROM tokens WHERE app = ?1 AND class = ?2 AND subject = ?3",
                    params![&*key.app, class_name(key.class), key.subject()],
                )
                .map_err(unavailable)?;
            Ok(n > 0)
        })
        .await
    }

    /// Removes a user's user and biz records of an app.
    pub async fn delete_user(&self, app: &str, open_id: &str) -> Result<usize, StoreError> {
        let (app, open_id) = (app.to_string(), open_id.to_string());
        self.run(move |c, _| {
            // Biz subjects are "open_id\nscope".
            let n = c
                .execute(
                    "DELETE FROM tokens WHERE app = ?1 AND class IN ('user', 'biz')
                     AND (subject = ?2 OR substr(subject, 1, length(?2) + 1) = ?2 || char(10))",
                    params![app, open_id],
                )
                .map_err(unavailable)?;
            Ok(n)
        })
        .await
    }

    /// A sealed value of another kind than a token (a provider's ticket): a row whose class
    /// names the kind, which reading tokens skips. Written whole, durable when it returns.
    pub async fn put_value(&self, kind: &'static str, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let (name, value) = (name.to_string(), value.to_vec());
        self.run(move |c, keys| {
            let sealed = keys.seal(&super::value_aad(kind, &name), &value);
            c.execute(
                "INSERT INTO tokens (app, class, subject, version, sealed, updated_unix) VALUES (?1, ?2, '', 1, ?3, ?4)
                 ON CONFLICT (app, class, subject) DO UPDATE SET version = version + 1, sealed = ?3, updated_unix = ?4",
                params![name, kind, sealed, crate::vocab::unix_now() as i64],
            )
            .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    /// The names of the values of `kind` (for `rekey`).
    pub async fn value_names(&self, kind: &'static str) -> Result<Vec<String>, StoreError> {
        self.run(move |c, _| {
            let mut q = c
                .prepare("SELECT app FROM tokens WHERE class = ?1 AND subject = ''")
                .map_err(unavailable)?;
            let names = q
                .query_map(params![kind], |r| r.get::<_, String>(0))
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            Ok(names)
        })
        .await
    }

    /// A value [`Self::put_value`] wrote, opened.
    pub async fn get_value(&self, kind: &'static str, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let name = name.to_string();
        self.run(move |c, keys| {
            let sealed: Option<Vec<u8>> = c
                .query_row(
                    "SELECT sealed FROM tokens WHERE app = ?1 AND class = ?2 AND subject = ''",
                    params![name, kind],
                    |r| r.get(0),
                )
                .optional()
                .map_err(unavailable)?;
            sealed.map(|s| super::open_value(keys, kind, &name, &s)).transpose()
        })
        .await
    }

    /// Whether the file answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run(|c, _| {
            c.query_row("SELECT count(*) FROM tokens", [], |_| Ok(()))
                .map_err(unavailable)
        })
        .await
    }
}
