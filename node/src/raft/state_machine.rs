//! [`GroupStateMachine`]: openraft's `RaftStateMachine` adapter for one group. It runs
//! the pure [`GroupMachine`] in memory (shared with readers through [`SharedState`]).
//!
//! Applying writes nothing to disk. What makes the machine durable is the synced log
//! and the group's last snapshot (the machine's dump, stored synced in the `snapshot`
//! family): a group opens from its snapshot, and openraft re-applies the log after
//! it (up to the stored committed index at start, the rest once a leader says it is
//! committed). openraft purges only entries a stored snapshot covers, so that
//! suffix is always there.

use std::io::Cursor;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use serde_bytes::{ByteBuf, Bytes};

use super::store::{Store, CF_SNAPSHOT};
use super::types::{
    Entry, GroupId, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::codec;
use crate::domain::{GroupKind, GroupMachine, Response};

/// A group's applied state, shared between the Raft task and local readers.
#[derive(Debug)]
pub struct AppliedState {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub machine: GroupMachine,
}

/// Readers' handle on a group's applied state.
#[derive(Debug, Clone)]
pub struct SharedState(Arc<RwLock<AppliedState>>);

impl SharedState {
    /// Read access; the lock is never held across an await or I/O.
    pub fn read(&self) -> RwLockReadGuard<'_, AppliedState> {
        // Poisoning means an apply panicked; openraft then stops the group, and
        // readers may still look at what it had applied.
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, AppliedState> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a snapshot carries besides its meta: every key-value of the machine.
///
/// Keys and values are byte strings to serde ([`ByteBuf`]), so bincode writes each
/// as its length and one copy. A `Vec<u8>` goes to serde as a sequence, one call
/// per byte: the same bytes (a length, then each byte), encoded and decoded several
/// times slower, which is what snapshots of earlier versions were written as. They
/// still decode, and earlier versions decode these.
#[derive(Serialize, Deserialize)]
pub struct SnapshotBody {
    pub kind: GroupKind,
    pub kvs: Vec<(ByteBuf, ByteBuf)>,
}

impl SnapshotBody {
    /// The body of a machine's dump ([`GroupMachine::dump`]); nothing is copied.
    pub fn of_dump(kind: GroupKind, kvs: Vec<(Vec<u8>, Vec<u8>)>) -> Self {
        Self {
            kind,
            kvs: kvs
                .into_iter()
                .map(|(k, v)| (ByteBuf::from(k), ByteBuf::from(v)))
                .collect(),
        }
    }
}

/// A stored snapshot: its meta and its encoded [`SnapshotBody`] (a byte string to
/// serde, as the body's keys and values are).
fn encode_stored(meta: &SnapshotMeta, data: &[u8]) -> crate::error::Result<Vec<u8>> {
    codec::encode(&(meta, Bytes::new(data)))
}

/// One group's state machine: in memory, opened from the group's stored snapshot.
pub struct GroupStateMachine {
    group: GroupId,
    kind: GroupKind,
    store: Store,
    state: SharedState,
}

impl GroupStateMachine {
    /// Opens the group's machine from its stored snapshot (empty if it has none);
    /// openraft then re-applies the log after it.
    pub fn open(store: Store, group: GroupId, kind: GroupKind) -> Result<Self, StorageError> {
        let (last_applied, membership, machine) = load(&store, group, kind)?;
        let sm = Self {
            group,
            kind,
            store,
            state: SharedState(Arc::new(RwLock::new(AppliedState {
                last_applied,
                membership,
                machine,
            }))),
        };
        Ok(sm)
    }

    /// The handle readers use.
    pub fn shared(&self) -> SharedState {
        self.state.clone()
    }

    fn read_stored_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError> {
        read_stored_snapshot(&self.store, self.group)
    }
}

fn read_stored_snapshot(
    store: &Store,
    group: GroupId,
) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError> {
    let bytes = store
        .db()
        .get_cf(store.cf(CF_SNAPSHOT), group.prefix())
        .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
    bytes
        .map(|b| {
            codec::decode::<(SnapshotMeta, ByteBuf)>(&b)
                .map(|(meta, data)| (meta, data.into_vec()))
                .map_err(|e| StorageIOError::read_snapshot(None, &e).into())
        })
        .transpose()
}

/// Restores a group's machine from its stored snapshot, or an empty machine at no
/// log id if it has none.
fn load(
    store: &Store,
    group: GroupId,
    kind: GroupKind,
) -> Result<(Option<LogId>, StoredMembership, GroupMachine), StorageError> {
    let Some((meta, data)) = read_stored_snapshot(store, group)? else {
        return Ok((None, StoredMembership::default(), GroupMachine::new(kind)));
    };
    let sig = Some(meta.signature());
    let body: SnapshotBody =
        codec::decode(&data).map_err(|e| StorageIOError::read_snapshot(sig.clone(), &e))?;
    let machine = restore(kind, &body, &meta)?;
    Ok((meta.last_log_id, meta.last_membership, machine))
}

/// The machine a snapshot body holds, refused if it is another kind of group's.
fn restore(
    kind: GroupKind,
    body: &SnapshotBody,
    meta: &SnapshotMeta,
) -> Result<GroupMachine, StorageError> {
    let sig = Some(meta.signature());
    if body.kind != kind {
        return Err(StorageIOError::read_snapshot(
            sig,
            &AnyErr(format!(
                "snapshot of a {:?} group given to a {:?} group",
                body.kind, kind
            )),
        )
        .into());
    }
    GroupMachine::restore(
        kind,
        body.kvs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
    )
    .map_err(|e| StorageIOError::read_snapshot(sig, &e).into())
}

/// A plain-message error for openraft's `AnyError` conversions.
#[derive(Debug)]
struct AnyErr(String);

impl std::fmt::Display for AnyErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AnyErr {}

impl RaftStateMachine<TypeConfig> for GroupStateMachine {
    type SnapshotBuilder = GroupSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let st = self.state.read();
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        let mut st = self.state.write();
        for entry in entries {
            st.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => responses.push(Response::Empty),
                EntryPayload::Normal(cmd) => {
                    // The changes are the machine's records as key-values; the
                    // snapshot dumps the same records, so nothing here keeps them.
                    let (response, _changes) = st.machine.apply(cmd, entry.log_id.index);
                    responses.push(response);
                }
                EntryPayload::Membership(m) => {
                    st.membership = StoredMembership::new(Some(entry.log_id), m);
                    responses.push(Response::Empty);
                }
            }
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        GroupSnapshotBuilder {
            group: self.group,
            kind: self.kind,
            store: self.store.clone(),
            state: self.state.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let sig = Some(meta.signature());
        let data = snapshot.into_inner();
        let body: SnapshotBody =
            codec::decode(&data).map_err(|e| StorageIOError::read_snapshot(sig.clone(), &e))?;
        // Decode everything before touching the disk.
        let machine = restore(self.kind, &body, meta)?;
        let write_err = |e: &dyn std::fmt::Display| {
            StorageIOError::write_snapshot(sig.clone(), &AnyErr(e.to_string()))
        };
        // Synced before openraft purges the entries it covers.
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.store.cf(CF_SNAPSHOT),
            self.group.prefix(),
            encode_stored(meta, &data).map_err(|e| write_err(&e))?,
        );
        self.store.write(batch, true).map_err(|e| write_err(&e))?;
        {
            let mut st = self.state.write();
            st.last_applied = meta.last_log_id;
            st.membership = meta.last_membership.clone();
            st.machine = machine;
        }
        metrics::counter!("boxoffice_raft_snapshots_installed_total", "group" => self.group.0.to_string())
            .increment(1);
        tracing::info!(group = %self.group, snapshot = %meta.snapshot_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.read_stored_snapshot()?.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// Builds a snapshot from the in-memory machine: a consistent cut (the machine's
/// records frozen under the read lock, [`GroupMachine::freeze`]), dumped and
/// encoded on the blocking pool.
///
/// openraft builds snapshots while the group applies, and with openraft's own
/// policy every replica of a group reached the snapshot threshold at the same
/// index, so whatever a build held up, it held up on all of them at once (the
/// replicas now take turns, `snapshot_turns`). Dumping and encoding the machine
/// under the lock, on a runtime worker, stalled applies on every replica for
/// about two seconds in the overload benchmark (an event's dedup entries and
/// holds, tens of thousands of them); a clone of the whole machine under the lock
/// still took 46–199 ms there. Freezing the records takes microseconds, whatever
/// the machine's size (its tables are persistent maps), and
/// `boxoffice_raft_snapshot_lock_seconds` says how long it held applies up.
///
/// Reading the group's range of the `sm` family at a RocksDB snapshot instead
/// (when applies still wrote the machine there) needed no lock at all, but was
/// tried and not kept: it cost about twice the CPU
/// of clone, dump and encode together (the iterator steps over every older version
/// of a rewritten hold and the tombstone of every evicted request id, and sorts
/// the vector memtable),
/// and under overload that CPU is what the served requests need.
pub struct GroupSnapshotBuilder {
    group: GroupId,
    kind: GroupKind,
    store: Store,
    state: SharedState,
}

impl RaftSnapshotBuilder<TypeConfig> for GroupSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let started = std::time::Instant::now();
        let (meta, frozen, locked) = {
            let st = self.state.read();
            // Applies wait from here until the records are frozen: that is measured
            // (not the wait for the lock, which is the build waiting for an apply).
            let held = std::time::Instant::now();
            let id = match st.last_applied {
                Some(l) => format!("{}-{}-{}", self.group.0, l.leader_id.term, l.index),
                None => format!("{}-empty", self.group.0),
            };
            let meta = SnapshotMeta {
                last_log_id: st.last_applied,
                last_membership: st.membership.clone(),
                snapshot_id: id,
            };
            let frozen = st.machine.freeze();
            (meta, frozen, held.elapsed())
        };
        metrics::histogram!("boxoffice_raft_snapshot_lock_seconds").record(locked.as_secs_f64());
        let sig = Some(meta.signature());
        let (store, kind, key, stored_meta) = (
            self.store.clone(),
            self.kind,
            self.group.prefix(),
            meta.clone(),
        );
        let data = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, AnyErr> {
            let body = SnapshotBody::of_dump(kind, frozen.dump());
            let data = codec::encode(&body).map_err(|e| AnyErr(e.to_string()))?;
            let stored = encode_stored(&stored_meta, &data).map_err(|e| AnyErr(e.to_string()))?;
            let mut batch = WriteBatch::default();
            batch.put_cf(store.cf(CF_SNAPSHOT), key, stored);
            store
                .write(batch, true)
                .map_err(|e| AnyErr(e.to_string()))?;
            Ok(data)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?
        .map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
        metrics::counter!("boxoffice_raft_snapshots_built_total", "group" => self.group.0.to_string())
            .increment(1);
        tracing::info!(
            group = %self.group,
            snapshot = %meta.snapshot_id,
            bytes = data.len(),
            lock_ms = locked.as_secs_f64() * 1e3,
            build_ms = started.elapsed().as_secs_f64() * 1e3,
            "built snapshot"
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How earlier versions wrote a snapshot body: keys and values as `Vec<u8>`.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct EarlierBody {
        kind: GroupKind,
        kvs: Vec<(Vec<u8>, Vec<u8>)>,
    }

    #[test]
    fn snapshots_encode_as_earlier_versions_wrote_them() {
        let kvs = vec![
            (vec![1, 2, 3], vec![]),
            (vec![0xff; 200], (0..=255).collect()),
        ];
        let earlier = codec::encode(&EarlierBody {
            kind: GroupKind::Inventory,
            kvs: kvs.clone(),
        })
        .expect("encode");
        let now = codec::encode(&SnapshotBody::of_dump(GroupKind::Inventory, kvs.clone()))
            .expect("encode");
        assert_eq!(now, earlier, "the same bytes");
        let back: SnapshotBody = codec::decode(&earlier).expect("decode");
        assert_eq!(back.kind, GroupKind::Inventory);
        let back: Vec<(Vec<u8>, Vec<u8>)> = back
            .kvs
            .into_iter()
            .map(|(k, v)| (k.into_vec(), v.into_vec()))
            .collect();
        assert_eq!(back, kvs);
        let to_earlier: EarlierBody = codec::decode(&now).expect("decode");
        assert_eq!(to_earlier.kvs, kvs);

        // The stored form (meta, body) too.
        let meta = SnapshotMeta::default();
        let stored = encode_stored(&meta, &now).expect("encode");
        assert_eq!(stored, codec::encode(&(&meta, &now)).expect("encode"));
        let (m, data): (SnapshotMeta, ByteBuf) = codec::decode(&stored).expect("decode");
        assert_eq!((m, data.into_vec()), (meta, now));
    }
}
