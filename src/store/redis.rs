//! Redis store (placeholder until the multi-instance work lands).

use super::crypto::Keys;
use super::{Put, Record, StoreError};
use crate::token::TokenKey;

/// The Redis store.
pub struct RedisStore;

impl RedisStore {
    /// Opens a connection.
    pub async fn open(_url: &str, _prefix: &str, _keys: Keys) -> Result<RedisStore, String> {
        Err("the redis store is not built yet".into())
    }
    /// Every record.
    pub async fn load_all(&self) -> Result<Vec<Record>, StoreError> {
        unreachable!()
    }
    /// One record.
    pub async fn get(&self, _key: &TokenKey) -> Result<Option<Record>, StoreError> {
        unreachable!()
    }
    /// CAS write.
    pub async fn put(&self, _rec: &Record, _expected: u64) -> Result<Put, StoreError> {
        unreachable!()
    }
    /// Delete.
    pub async fn delete(&self, _key: &TokenKey) -> Result<bool, StoreError> {
        unreachable!()
    }
    /// Delete a user.
    pub async fn delete_user(&self, _app: &str, _open_id: &str) -> Result<usize, StoreError> {
        unreachable!()
    }
    /// Ping.
    pub async fn ping(&self) -> Result<(), StoreError> {
        unreachable!()
    }
}
