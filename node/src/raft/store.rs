//! The node's one RocksDB: column families, key layout and the data dir's identity.
//!
//! | column family | key                          | value                         |
//! |---------------|------------------------------|-------------------------------|
//! | `log`         | group (8B BE) + index (8B BE)| a Raft entry                  |
//! | `raft`        | group + tag                  | vote, committed, last purged  |
//! | `snapshot`    | group                        | the group's current snapshot  |
//! | `default`     | `identity`                   | (cluster name, node id)       |
//!
//! Every value is [`crate::codec`]-encoded (format byte first). Keys start with the
//! big-endian group id, so one group is one contiguous range in each family and a
//! group can be dropped or moved as a range.
//!
//! State machines live in memory and are durable through the log and their
//! snapshots (`raft/state_machine.rs`), so applying writes nothing here. Data dirs
//! of earlier versions also hold an `sm` family (the machines' records, written on
//! every apply); it is dropped when such a dir is opened.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};

use super::types::GroupId;
use crate::codec;
use crate::config::StorageSettings;
use crate::error::{Error, Result};

pub(crate) const CF_LOG: &str = "log";
pub(crate) const CF_RAFT: &str = "raft";
/// Earlier versions' state-machine family, dropped at open.
const LEGACY_CF_SM: &str = "sm";
pub(crate) const CF_SNAPSHOT: &str = "snapshot";
const IDENTITY_KEY: &[u8] = b"identity";

/// A node's storage: a handle to its RocksDB, cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<DB>,
}

impl Store {
    /// Opens (or creates) the data dir of `node_id` in `cluster`, refusing a dir that
    /// another cluster or node wrote.
    pub fn open(
        dir: &Path,
        cluster: &str,
        node_id: u64,
        settings: &StorageSettings,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Config(format!("cannot create data dir {}: {e}", dir.display())))?;
        let write_buffer =
            usize::try_from(settings.write_buffer_mib.clamp(1, 4096) << 20).unwrap_or(64 << 20);
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_keep_log_file_num(4);
        opts.set_write_buffer_size(write_buffer);
        // A dir that is not a database yet lists nothing (the open below says why
        // a dir that should be one cannot be opened).
        let legacy_sm = DB::list_cf(&opts, dir)
            .map(|cfs| cfs.iter().any(|cf| cf == LEGACY_CF_SM))
            .unwrap_or(false);
        let names = [CF_LOG, CF_RAFT, CF_SNAPSHOT]
            .into_iter()
            .chain(legacy_sm.then_some(LEGACY_CF_SM));
        let cfs = names.map(|name| {
            let mut cf = Options::default();
            cf.set_write_buffer_size(write_buffer);
            ColumnFamilyDescriptor::new(name, cf)
        });
        let mut db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(|e| {
            Error::Config(format!(
                "cannot open data dir {} as RocksDB: {e}",
                dir.display()
            ))
        })?;
        // A dir another cluster or node wrote is refused before anything in it changes.
        check_identity(&db, dir, cluster, node_id)?;
        if legacy_sm {
            db.drop_cf(LEGACY_CF_SM)?;
            tracing::info!(dir = %dir.display(), "dropped the state-machine family of an earlier version (machines open from their snapshots and the log)");
        }
        Ok(Store { db: Arc::new(db) })
    }

    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    pub(crate) fn cf(&self, name: &str) -> &ColumnFamily {
        // The families are created at open; a missing one is a programming error.
        self.db
            .cf_handle(name)
            .unwrap_or_else(|| panic!("column family {name} is opened with the db"))
    }

    /// Writes a batch; `sync` fsyncs the WAL before returning.
    pub(crate) fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), rocksdb::Error> {
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(batch, &wo)
    }

    /// Whether the group has any Raft state on this node (vote, log, or snapshot).
    pub fn group_has_state(&self, group: GroupId) -> Result<bool> {
        for cf in [CF_RAFT, CF_LOG, CF_SNAPSHOT] {
            let mut it = self.db.prefix_iterator_cf(self.cf(cf), group.prefix());
            if let Some(item) = it.next() {
                let (k, _) = item?;
                if k.starts_with(&group.prefix()) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

/// Writes the data dir's identity if it has none; refuses a dir that another
/// cluster or node wrote.
fn check_identity(db: &DB, dir: &Path, cluster: &str, node_id: u64) -> Result<()> {
    let expected = (cluster.to_string(), node_id);
    let describe = |(c, n): &(String, u64)| format!("node {n} of cluster {c:?}");
    match db.get(IDENTITY_KEY)? {
        Some(bytes) => {
            let found: (String, u64) = codec::decode(&bytes)?;
            if found != expected {
                return Err(Error::ForeignDataDir {
                    dir: dir.to_path_buf(),
                    found: describe(&found),
                    expected: describe(&expected),
                });
            }
        }
        None => {
            let mut wo = WriteOptions::default();
            wo.set_sync(true);
            db.put_opt(IDENTITY_KEY, codec::encode(&expected)?, &wo)?;
        }
    }
    Ok(())
}

/// `group + suffix`.
pub(crate) fn group_key(group: GroupId, suffix: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + suffix.len());
    k.extend_from_slice(&group.prefix());
    k.extend_from_slice(suffix);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_data_dir_of_another_cluster_or_node() {
        let dir = tempfile::tempdir().expect("test value");
        drop(Store::open(dir.path(), "alpha", 1, &StorageSettings::default()).expect("test value"));
        assert!(Store::open(dir.path(), "alpha", 1, &StorageSettings::default()).is_ok());
        let err = Store::open(dir.path(), "beta", 1, &StorageSettings::default())
            .err()
            .expect("test value")
            .to_string();
        assert!(
            err.contains("cluster \"alpha\"") && err.contains("refusing"),
            "{err}"
        );
        let err = Store::open(dir.path(), "alpha", 2, &StorageSettings::default())
            .err()
            .expect("test value")
            .to_string();
        assert!(err.contains("node 1"), "{err}");
    }

    #[test]
    fn an_earlier_versions_state_machine_family_is_dropped_at_open() {
        let dir = tempfile::tempdir().expect("test value");
        {
            let mut opts = Options::default();
            opts.create_if_missing(true);
            opts.create_missing_column_families(true);
            let db = DB::open_cf(
                &opts,
                dir.path(),
                [CF_LOG, CF_RAFT, LEGACY_CF_SM, CF_SNAPSHOT],
            )
            .expect("test value");
            let sm = db.cf_handle(LEGACY_CF_SM).expect("test value");
            db.put_cf(sm, group_key(GroupId(1), b"k"), b"v")
                .expect("test value");
            let identity = codec::encode(&("alpha".to_string(), 1u64)).expect("test value");
            db.put(IDENTITY_KEY, identity).expect("test value");
        }
        let has_legacy = || {
            DB::list_cf(&Options::default(), dir.path())
                .expect("test value")
                .iter()
                .any(|cf| cf == LEGACY_CF_SM)
        };
        assert!(
            Store::open(dir.path(), "beta", 1, &StorageSettings::default()).is_err(),
            "another cluster's dir is refused"
        );
        assert!(has_legacy(), "a refused dir is left as it was");
        let store = Store::open(dir.path(), "alpha", 1, &StorageSettings::default())
            .expect("a dir with the old family opens");
        assert!(store.db().cf_handle(LEGACY_CF_SM).is_none());
        drop(store);
        assert!(!has_legacy());
        assert!(Store::open(dir.path(), "alpha", 1, &StorageSettings::default()).is_ok());
    }

    #[test]
    fn group_ranges_are_contiguous() {
        assert!(group_key(GroupId(1), &[0xff; 20]) < group_key(GroupId(2), &[]));
        assert!(group_key(GroupId(1), &[]) < group_key(GroupId(1), &[0]));
        let last = GroupId(u64::MAX - 1);
        assert!(group_key(last, &[0xff; 40]) < group_key(GroupId(u64::MAX), &[]));
    }
}
