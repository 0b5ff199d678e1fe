//! Sealed values that are not tokens (a provider's ticket), under `{prefix}x:{kind}:{name}`:
//! outside the `t:*` keys, so reading tokens never sees them.

use super::RedisStore;
use crate::store::StoreError;

impl RedisStore {
    fn value_key(&self, kind: &str, name: &str) -> String {
        format!("{}x:{kind}:{name}", self.prefix)
    }

    /// Writes a sealed value whole.
    pub async fn put_value(&self, kind: &'static str, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let sealed = self.keys.seal(&crate::store::value_aad(kind, name), value);
        let mut conn = self.conn().await;
        redis::cmd("SET")
            .arg(self.value_key(kind, name))
            .arg(sealed)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.fail(e))
    }

    /// The names of the values of `kind` (for `rekey`).
    pub async fn value_names(&self, kind: &'static str) -> Result<Vec<String>, StoreError> {
        let head = self.value_key(kind, "");
        let keys = self.scan(&format!("{}*", super::glob_escape(&head))).await?;
        Ok(keys
            .into_iter()
            .filter_map(|k| k.strip_prefix(&head).map(str::to_string))
            .collect())
    }

    /// A value [`Self::put_value`] wrote, opened.
    pub async fn get_value(&self, kind: &'static str, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = self.conn().await;
        let sealed: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.value_key(kind, name))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        sealed
            .map(|s| crate::store::open_value(&self.keys, kind, name, &s))
            .transpose()
    }
}
