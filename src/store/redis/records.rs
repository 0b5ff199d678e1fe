//! Reading records: one, several, every one (for the sweep and at start), and a bulk load.

use super::{glob_escape, RedisStore, READ_BATCH};
use crate::store::record::{class_from, class_name};
use crate::store::{Record, StoreError};
use crate::vocab::{TokenClass, TokenKey};

impl RedisStore {
    /// Every key matching `pattern`, by `SCAN`.
    pub(super) async fn scan(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn().await;
        let (mut cursor, mut out) = (0u64, Vec::new());
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.fail(e))?;
            out.extend(keys);
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }

    /// The record under a Redis key.
    pub(super) async fn read(&self, rkey: &str) -> Result<Option<Record>, StoreError> {
        Ok(self.read_many(std::slice::from_ref(&rkey)).await?.pop().flatten())
    }

    /// Records by Redis key, in one pipelined round trip.
    async fn read_many<K: AsRef<str>>(&self, rkeys: &[K]) -> Result<Vec<Option<Record>>, StoreError> {
        self.read_each(rkeys).await?.into_iter().collect()
    }

    /// Records by Redis key, in one pipelined round trip, each readable or not.
    async fn read_each<K: AsRef<str>>(
        &self,
        rkeys: &[K],
    ) -> Result<Vec<Result<Option<Record>, StoreError>>, StoreError> {
        type Row = (
            Option<u64>,
            Option<Vec<u8>>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        if rkeys.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await;
        let mut pipe = redis::pipe();
        for k in rkeys {
            pipe.cmd("HMGET").arg(k.as_ref()).arg(&["v", "s", "a", "c", "o"]);
        }
        let rows: Vec<Row> = pipe.query_async(&mut conn).await.map_err(|e| self.fail(e))?;
        Ok(rows
            .into_iter()
            .map(|(v, s, a, c, o)| {
                let (Some(v), Some(s), Some(a), Some(c), Some(o)) = (v, s, a, c, o) else {
                    return Ok(None);
                };
                let Some(class) = class_from(&c) else { return Ok(None) };
                let key = TokenKey::stored(a.into(), class, &o);
                Record::open(&self.keys, key, v, &s).map(Some)
            })
            .collect())
    }

    /// One step of a pass over every record: the records under the keys one `SCAN` step
    /// returns (read in one pipelined round trip; unreadable ones logged and skipped), and the
    /// cursor of the next step (0: the pass is over).
    pub async fn sweep_page(&self, cursor: u64) -> Result<(u64, Vec<Record>), StoreError> {
        let pattern = format!("{}t:*", glob_escape(&self.prefix));
        let mut conn = self.conn().await;
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(READ_BATCH)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        let mut out = Vec::with_capacity(keys.len());
        for r in self.read_each(&keys).await? {
            match r {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(e) => tracing::warn!("skipping a stored token in the sweep: {e}"),
            }
        }
        Ok((next, out))
    }

    /// Every record, read in pipelined batches.
    pub async fn load_all(&self) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        let keys = self.scan(&format!("{}t:*", glob_escape(&self.prefix))).await?;
        for chunk in keys.chunks(READ_BATCH) {
            out.extend(self.read_many(chunk).await?.into_iter().flatten());
        }
        Ok(out)
    }

    /// Several records, in the order of `keys`, in pipelined batches.
    pub async fn get_many(&self, keys: &[TokenKey]) -> Result<Vec<Option<Record>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(READ_BATCH) {
            let rkeys: Vec<String> = chunk.iter().map(|k| self.record_key(k)).collect();
            out.extend(self.read_many(&rkeys).await?);
        }
        Ok(out)
    }

    /// Writes records that are not stored yet, at version 1, in pipelined batches and without
    /// compare-and-swap or events: a bulk load into an empty key prefix (a migration, the
    /// `redis_scale` bench), never for a prefix instances are using.
    pub async fn insert_new(&self, records: &[Record]) -> Result<(), StoreError> {
        let mut conn = self.conn().await;
        for chunk in records.chunks(READ_BATCH) {
            let mut pipe = redis::pipe();
            for rec in chunk {
                let sealed = self.keys.seal(&Record::aad(&rec.key), &rec.body());
                pipe.cmd("HSET")
                    .arg(self.record_key(&rec.key))
                    .arg("v")
                    .arg(1)
                    .arg("s")
                    .arg(sealed)
                    .arg("a")
                    .arg(&*rec.key.app)
                    .arg("c")
                    .arg(class_name(rec.key.class))
                    .arg("o")
                    .arg(rec.key.subject())
                    .ignore();
            }
            pipe.query_async::<()>(&mut conn).await.map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    /// One record.
    pub async fn get(&self, key: &TokenKey) -> Result<Option<Record>, StoreError> {
        self.read(&self.record_key(key)).await
    }

    /// Every record of one app (or provider) and class: one `SCAN` over the keyspace, then the
    /// matching records in pipelined batches.
    pub async fn records_of(&self, app: &str, class: TokenClass) -> Result<Vec<Record>, StoreError> {
        let pattern = format!(
            "{}t:{}:{}:*",
            glob_escape(&self.prefix),
            glob_escape(app),
            class_name(class)
        );
        let keys = self.scan(&pattern).await?;
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(READ_BATCH) {
            out.extend(self.read_many(chunk).await?.into_iter().flatten());
        }
        Ok(out)
    }
}
