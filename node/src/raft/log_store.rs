//! [`LogStore`]: openraft's `RaftLogStorage` for one group on the node's RocksDB.
//!
//! Durability: an append is one `WriteBatch` written with `sync`, and openraft is told
//! the entries are flushed only after it returns. Votes and truncations are synced too.
//! The committed index is persisted without sync (openraft re-learns it from the leader).
//! Purging first syncs the WAL, so state-machine writes of everything applied so far
//! are durable before the log entries that produced them disappear.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, StorageIOError};
use rocksdb::{Direction, IteratorMode, WriteBatch};

use super::store::{group_key, Store, CF_LOG, CF_RAFT};
use super::types::{Entry, GroupId, LogId, StorageError, TypeConfig, Vote};
use crate::codec;

const TAG_VOTE: u8 = 1;
const TAG_COMMITTED: u8 = 2;
const TAG_PURGED: u8 = 3;

/// One group's Raft log and metadata.
#[derive(Clone)]
pub struct LogStore {
    group: GroupId,
    store: Store,
}

impl LogStore {
    pub fn new(store: Store, group: GroupId) -> Self {
        Self { group, store }
    }

    /// Appends `entries` in one RocksDB batch and fsyncs it: the work of
    /// `RaftLogStorage::append` before it reports the flush (public for the
    /// criterion benchmark of the append path).
    pub async fn write_entries(
        &mut self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        for entry in entries {
            let bytes = codec::encode(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
            batch.put_cf(
                self.store.cf(CF_LOG),
                self.log_key(entry.log_id.index),
                bytes,
            );
        }
        self.write_blocking(batch, true, |e| StorageIOError::write_logs(e))
            .await
    }

    fn log_key(&self, index: u64) -> Vec<u8> {
        group_key(self.group, &index.to_be_bytes())
    }

    fn meta_key(&self, tag: u8) -> Vec<u8> {
        group_key(self.group, &[tag])
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, tag: u8) -> Result<Option<T>, StorageError> {
        let bytes = self
            .store
            .db()
            .get_cf(self.store.cf(CF_RAFT), self.meta_key(tag))
            .map_err(|e| StorageIOError::read(&e))?;
        bytes
            .map(|b| codec::decode(&b).map_err(|e| StorageIOError::read(&e).into()))
            .transpose()
    }

    /// Writes a batch off the async runtime's worker threads (an fsync takes
    /// milliseconds), preserving the order of this group's log operations because
    /// openraft awaits each call before issuing the next.
    async fn write_blocking(
        &self,
        batch: WriteBatch,
        sync: bool,
        err: fn(&rocksdb::Error) -> StorageIOError<u64>,
    ) -> Result<(), StorageError> {
        let store = self.store.clone();
        let res = tokio::task::spawn_blocking(move || store.write(batch, sync))
            .await
            .map_err(|e| StorageIOError::write(&e))?;
        res.map_err(|e| err(&e).into())
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        let upper = self.log_key(u64::MAX);
        let mut it = self.store.db().iterator_cf(
            self.store.cf(CF_LOG),
            IteratorMode::From(&upper, Direction::Reverse),
        );
        match it.next() {
            Some(item) => {
                let (k, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
                if !k.starts_with(&self.group.prefix()) {
                    return Ok(None);
                }
                let entry: Entry = codec::decode(&v).map_err(|e| StorageIOError::read_logs(&e))?;
                Ok(Some(entry.log_id))
            }
            None => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let start_key = self.log_key(start);
        let it = self.store.db().iterator_cf(
            self.store.cf(CF_LOG),
            IteratorMode::From(&start_key, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in it {
            let (k, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            if !k.starts_with(&self.group.prefix()) || k.len() != 16 {
                break;
            }
            let index = u64::from_be_bytes(k[8..16].try_into().unwrap_or([0xff; 8]));
            if !range.contains(&index) {
                break;
            }
            out.push(codec::decode(&v).map_err(|e| StorageIOError::read_logs(&e))?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.get_meta(TAG_PURGED)?;
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        let bytes = codec::encode(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        batch.put_cf(self.store.cf(CF_RAFT), self.meta_key(TAG_VOTE), bytes);
        self.write_blocking(batch, true, |e| StorageIOError::write_vote(e))
            .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(TAG_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let bytes = codec::encode(&committed).map_err(|e| StorageIOError::write(&e))?;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.store.cf(CF_RAFT), self.meta_key(TAG_COMMITTED), bytes);
        self.write_blocking(batch, false, |e| StorageIOError::write(e))
            .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(TAG_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let res = self.write_entries(entries).await;
        match &res {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        res
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.store.cf(CF_LOG),
            self.log_key(log_id.index),
            self.log_key(u64::MAX),
        );
        self.write_blocking(batch, true, |e| StorageIOError::write_logs(e))
            .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.sync_wal())
            .await
            .map_err(|e| StorageIOError::write(&e))?
            .map_err(|e| StorageIOError::write(&e))?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.store.cf(CF_LOG),
            self.log_key(0),
            self.log_key(log_id.index.saturating_add(1)),
        );
        let bytes = codec::encode(&log_id).map_err(|e| StorageIOError::write_logs(&e))?;
        batch.put_cf(self.store.cf(CF_RAFT), self.meta_key(TAG_PURGED), bytes);
        self.write_blocking(batch, false, |e| StorageIOError::write_logs(e))
            .await
    }
}
