//! openraft's own conformance suite against the RocksDB log store and state machine.

use openraft::testing::{StoreBuilder, Suite};

use openraft::storage::RaftLogStorage;

use super::log_store::LogStore;
use super::state_machine::GroupStateMachine;
use super::store::{group_key, Store, CF_LOG};
use super::types::{Entry, GroupId, StorageError, TypeConfig};
use crate::codec;
use crate::domain::GroupKind;

/// Builds a fresh store per test case; the temp dir lives as long as the case.
struct RocksBuilder {
    group: GroupId,
}

impl StoreBuilder<TypeConfig, LogStore, GroupStateMachine, tempfile::TempDir> for RocksBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, GroupStateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), "suite", 1, &Default::default()).expect("open store");
        // A neighbouring group with data on both sides must not leak into this one.
        for other in [self.group.0.checked_sub(1), Some(self.group.0 + 1)]
            .into_iter()
            .flatten()
            .map(GroupId)
        {
            let mut log = LogStore::new(store.clone(), other);
            log.save_vote(&openraft::Vote::new(9, 9)).await?;
            let entry = Entry {
                log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(9, 9), 3),
                payload: openraft::EntryPayload::Blank,
            };
            let db = store.db();
            db.put_cf(
                store.cf(CF_LOG),
                group_key(other, &3u64.to_be_bytes()),
                codec::encode(&entry).unwrap(),
            )
            .unwrap();
        }
        let log = LogStore::new(store.clone(), self.group);
        let sm = GroupStateMachine::open(store, self.group, GroupKind::Catalog)?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_catalog_group() -> Result<(), StorageError> {
    Suite::test_all(RocksBuilder { group: GroupId(0) })
}

#[test]
fn openraft_storage_suite_between_other_groups() -> Result<(), StorageError> {
    Suite::test_all(RocksBuilder { group: GroupId(42) })
}
