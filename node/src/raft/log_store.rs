//! [`LogStore`]: openraft's `RaftLogStorage` for one group on the node's RocksDB.
//!
//! Durability: an append is one `WriteBatch` written with `sync`, and openraft is told
//! the entries are flushed only after it returns. Votes and truncations are synced too.
//! The committed index is not written on its own: openraft reports it after every
//! commit, and it rides along with the group's next log write (an append, truncation,
//! purge or vote), so the stored one trails by about one batch. openraft needs it
//! only to re-apply on restart without waiting for a leader, and re-learns the rest
//! from the leader.
//! Purging is not synced: openraft purges only entries a stored, synced snapshot
//! covers, so a purge lost in a crash leaves only entries no longer needed.
//!
//! Reads: applying and replicating read back what was just appended, so the newest
//! entries stay in memory as well ([`Tail`]) and those reads need no RocksDB
//! iterator and no decode; anything older comes from RocksDB.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, StorageIOError};
use rocksdb::{Direction, IteratorMode, WriteBatch};

use super::store::{group_key, Store, CF_LOG, CF_RAFT};
use super::types::{Entry, GroupId, LogId, StorageError, TypeConfig, Vote};
use crate::codec;

const TAG_VOTE: u8 = 1;
const TAG_COMMITTED: u8 = 2;
const TAG_PURGED: u8 = 3;

/// Entries the [`Tail`] keeps at most.
const TAIL_ENTRIES: usize = 64;
/// Encoded bytes the [`Tail`] keeps at most (past one entry).
const TAIL_BYTES: usize = 256 * 1024;

/// The newest entries of a group's log, consecutive, each with its encoded size:
/// a copy of what RocksDB holds, updated only after an append is durable and
/// before a truncation or purge is written, so it never serves an entry the log
/// does not have. Bounded by [`TAIL_ENTRIES`] and [`TAIL_BYTES`].
#[derive(Default)]
struct Tail {
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl Tail {
    fn push(&mut self, entry: Entry, size: usize) {
        let follows = self
            .entries
            .back()
            .is_none_or(|(last, _)| entry.log_id.index == last.log_id.index.wrapping_add(1));
        if !follows {
            self.entries.clear();
            self.bytes = 0;
        }
        self.entries.push_back((entry, size));
        self.bytes += size;
        while self.entries.len() > TAIL_ENTRIES
            || (self.bytes > TAIL_BYTES && self.entries.len() > 1)
        {
            if let Some((_, size)) = self.entries.pop_front() {
                self.bytes -= size;
            }
        }
    }

    /// Forgets entries from `index` on (a truncation).
    fn truncate(&mut self, index: u64) {
        while self
            .entries
            .back()
            .is_some_and(|(e, _)| e.log_id.index >= index)
        {
            if let Some((_, size)) = self.entries.pop_back() {
                self.bytes -= size;
            }
        }
    }

    /// Forgets entries up to `index` (a purge).
    fn purge(&mut self, index: u64) {
        while self
            .entries
            .front()
            .is_some_and(|(e, _)| e.log_id.index <= index)
        {
            if let Some((_, size)) = self.entries.pop_front() {
                self.bytes -= size;
            }
        }
    }

    /// The entries `start..end`, if the tail holds all of them.
    fn get(&self, start: u64, end: u64) -> Option<Vec<Entry>> {
        let first = self.entries.front()?.0.log_id.index;
        let past = first + self.entries.len() as u64;
        if start < first || end > past {
            return None;
        }
        let range = (start - first) as usize..(end.max(start) - first) as usize;
        Some(self.entries.range(range).map(|(e, _)| e.clone()).collect())
    }
}

/// One group's Raft log and metadata.
#[derive(Clone)]
pub struct LogStore {
    group: GroupId,
    store: Store,
    /// Shared with the readers openraft clones from this store.
    tail: Arc<Mutex<Tail>>,
    /// The newest committed log id openraft reported, written with the next log
    /// write (see the module doc); `None` until it reports one.
    committed: Arc<Mutex<Option<LogId>>>,
}

impl LogStore {
    pub fn new(store: Store, group: GroupId) -> Self {
        Self {
            group,
            store,
            tail: Arc::default(),
            committed: Arc::default(),
        }
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn committed(&self) -> Option<LogId> {
        *self.committed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new batch for a log write, carrying the newest committed log id reported
    /// since the last one.
    fn batch(&self) -> Result<WriteBatch, StorageError> {
        let mut batch = WriteBatch::default();
        if let Some(committed) = self.committed() {
            let bytes = codec::encode(&Some(committed)).map_err(|e| StorageIOError::write(&e))?;
            batch.put_cf(self.store.cf(CF_RAFT), self.meta_key(TAG_COMMITTED), bytes);
        }
        Ok(batch)
    }

    /// Appends `entries` in one RocksDB batch and fsyncs it: the work of
    /// `RaftLogStorage::append` before it reports the flush (public for the
    /// criterion benchmark of the append path).
    pub async fn write_entries(
        &mut self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<(), StorageError> {
        let mut batch = self.batch()?;
        let mut written = Vec::new();
        for entry in entries {
            let bytes = codec::encode(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
            let size = bytes.len();
            batch.put_cf(
                self.store.cf(CF_LOG),
                self.log_key(entry.log_id.index),
                bytes,
            );
            written.push((size, entry));
        }
        self.write_blocking(batch, true, |e| StorageIOError::write_logs(e))
            .await?;
        let mut tail = self.tail();
        for (size, entry) in written {
            tail.push(entry, size);
        }
        Ok(())
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
        let end = match range.end_bound() {
            Bound::Included(i) => Some(i.saturating_add(1)),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        if let Some(entries) = end.and_then(|end| self.tail().get(start, end)) {
            return Ok(entries);
        }
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
        let mut batch = self.batch()?;
        let bytes = codec::encode(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        batch.put_cf(self.store.cf(CF_RAFT), self.meta_key(TAG_VOTE), bytes);
        self.write_blocking(batch, true, |e| StorageIOError::write_vote(e))
            .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(TAG_VOTE)
    }

    /// Remembered, not written: the next log write carries it (module doc). openraft
    /// awaits this before every apply, so a write of its own, on every node after
    /// every commit, held each group's Raft core up for a blocking-pool round trip.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let mut held = self.committed.lock().unwrap_or_else(|e| e.into_inner());
        // Committed log ids only grow; never let an older report replace a newer one.
        if committed > *held {
            *held = committed;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        match self.committed() {
            Some(c) => Ok(Some(c)),
            None => Ok(self.get_meta::<Option<LogId>>(TAG_COMMITTED)?.flatten()),
        }
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
        self.tail().truncate(log_id.index);
        let mut batch = self.batch()?;
        batch.delete_range_cf(
            self.store.cf(CF_LOG),
            self.log_key(log_id.index),
            self.log_key(u64::MAX),
        );
        self.write_blocking(batch, true, |e| StorageIOError::write_logs(e))
            .await
    }

    /// Not synced: openraft purges only entries that a stored (synced) snapshot
    /// covers, and a purge lost in a crash only leaves entries that are no longer
    /// needed.
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.tail().purge(log_id.index);
        let mut batch = self.batch()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: openraft::EntryPayload::Blank,
        }
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        entries.map(|es| es.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn the_tail_serves_only_ranges_it_holds_whole() {
        let mut tail = Tail::default();
        assert_eq!(indexes(tail.get(0, 1)), None, "empty");
        for i in 5..=8 {
            tail.push(entry(i), 10);
        }
        assert_eq!(indexes(tail.get(5, 9)), Some(vec![5, 6, 7, 8]));
        assert_eq!(indexes(tail.get(7, 8)), Some(vec![7]));
        assert_eq!(indexes(tail.get(6, 6)), Some(vec![]));
        assert_eq!(indexes(tail.get(4, 9)), None, "starts before the tail");
        assert_eq!(indexes(tail.get(6, 10)), None, "ends past the log");

        tail.truncate(7);
        assert_eq!(indexes(tail.get(5, 7)), Some(vec![5, 6]));
        assert_eq!(indexes(tail.get(5, 8)), None, "truncated");
        tail.push(entry(7), 10);
        tail.purge(5);
        assert_eq!(indexes(tail.get(5, 8)), None, "purged");
        assert_eq!(indexes(tail.get(6, 8)), Some(vec![6, 7]));

        // An append that does not follow the tail replaces it.
        tail.push(entry(20), 10);
        assert_eq!(indexes(tail.get(6, 8)), None);
        assert_eq!(indexes(tail.get(20, 21)), Some(vec![20]));
    }

    #[test]
    fn the_tail_is_bounded_in_entries_and_bytes() {
        let mut tail = Tail::default();
        for i in 0..(TAIL_ENTRIES as u64 + 10) {
            tail.push(entry(i), 1);
        }
        assert_eq!(tail.entries.len(), TAIL_ENTRIES);
        assert_eq!(tail.entries.front().map(|(e, _)| e.log_id.index), Some(10));

        tail.push(entry(TAIL_ENTRIES as u64 + 10), TAIL_BYTES);
        assert_eq!(
            tail.entries.len(),
            1,
            "one entry over the byte bound stays alone"
        );
        assert_eq!(tail.bytes, TAIL_BYTES);
    }

    #[tokio::test]
    async fn the_committed_index_rides_with_the_next_log_write() -> Result<(), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), "t", 1, &Default::default()).expect("open store");
        let mut log = LogStore::new(store.clone(), GroupId(7));
        log.write_entries([entry(1), entry(2)]).await?;
        log.save_committed(Some(entry(2).log_id)).await?;
        // Reported, not yet written: this store answers it, a reopened one does not.
        assert_eq!(log.read_committed().await?, Some(entry(2).log_id));
        assert_eq!(
            LogStore::new(store.clone(), GroupId(7))
                .read_committed()
                .await?,
            None
        );
        // An older report never replaces a newer one.
        log.save_committed(Some(entry(1).log_id)).await?;
        log.write_entries([entry(3)]).await?;
        assert_eq!(
            LogStore::new(store.clone(), GroupId(7))
                .read_committed()
                .await?,
            Some(entry(2).log_id),
            "the append carried the newest committed log id"
        );
        // Other groups' committed index is their own.
        assert_eq!(
            LogStore::new(store, GroupId(8)).read_committed().await?,
            None
        );
        Ok(())
    }
}
