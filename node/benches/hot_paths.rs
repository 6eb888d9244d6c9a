//! The hot paths of a seat hold, without the network: applying a batch of hold
//! commands to an event's inventory machine, a snapshot's cut of a busy event (what
//! it costs the applies beside it, and encoding and decoding its dump), encoding
//! and decoding a log entry, and the log store's synced append.
//! `cargo bench -p boxoffice-node --bench hot_paths`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use openraft::{CommittedLeaderId, EntryPayload};
use uuid::Uuid;

use boxoffice_node::codec;
use boxoffice_node::config::StorageSettings;
use boxoffice_node::domain::inventory::{
    EventLayout, InventoryCommand, Pick, RowLayout, SectionLayout, TierLayout,
};
use boxoffice_node::domain::{ids, Command, CommandBody, GroupKind, GroupMachine};
use boxoffice_node::raft::{Entry, GroupId, LogId, LogStore, SnapshotBody, Store};

const EVENT: Uuid = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
const SEATS: u32 = 20_000;
const BATCH: u32 = 1_000;

/// One section of 200 rows of 100 seats, on sale from t=1000.
fn layout() -> EventLayout {
    EventLayout {
        event_id: EVENT,
        tiers: vec![TierLayout {
            tier_id: Uuid::from_u128(1),
            name: "Floor".into(),
            price_cents: 10_000,
            fees_cents: 1_500,
        }],
        sections: vec![SectionLayout {
            name: "Floor".into(),
            tier: 0,
            rows: (0..SEATS / 100)
                .map(|r| RowLayout {
                    name: format!("R{r}"),
                    first_seat: r * 100,
                    seats: 100,
                })
                .collect(),
        }],
        seat_count: SEATS,
        date_ms: 1_000_000_000_000,
        on_sale_ms: 1_000,
        presale_start_ms: None,
        max_per_user: 8,
    }
}

fn command(n: u128, stamped_ms: i64, body: InventoryCommand) -> Command {
    Command {
        request_id: Uuid::from_u128(n),
        stamped_ms,
        body: CommandBody::Inventory(body),
    }
}

/// A hold of pair `p` (seats 2p, 2p+1) by its own user.
fn hold(p: u32) -> Command {
    command(
        1_000_000 + u128::from(p),
        2_000 + i64::from(p),
        InventoryCommand::Reserve {
            event_id: EVENT,
            reservation_id: ids::reservation(&EVENT, &Uuid::from_u128(u128::from(p))),
            user_id: Uuid::from_u128(10_000_000 + u128::from(p)),
            pick: Pick::Seats(vec![ids::seat(&EVENT, 2 * p), ids::seat(&EVENT, 2 * p + 1)]),
            hold_ms: 600_000,
        },
    )
}

fn opened() -> GroupMachine {
    let mut m = GroupMachine::new(GroupKind::Inventory);
    let open = command(
        1,
        1_000,
        InventoryCommand::Open {
            event_id: EVENT,
            layout: Box::new(layout()),
        },
    );
    m.apply(open, 1);
    m
}

fn entry(index: u64, cmd: Command) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(cmd),
    }
}

fn inventory(c: &mut Criterion) {
    let mut g = c.benchmark_group("inventory");
    g.throughput(Throughput::Elements(u64::from(BATCH)));
    let holds: Vec<Command> = (0..BATCH).map(hold).collect();
    // Every hold of the batch succeeds (distinct pairs).
    g.bench_function("apply 1000 pair holds (20,000 seats)", |b| {
        b.iter_batched(
            opened,
            |mut m| {
                for (i, cmd) in holds.iter().enumerate() {
                    black_box(m.apply(cmd.clone(), 2 + i as u64));
                }
                m
            },
            BatchSize::LargeInput,
        )
    });
    // Every hold of the batch conflicts (the pairs are taken).
    g.bench_function("apply 1000 conflicting holds", |b| {
        let mut taken = opened();
        for (i, cmd) in holds.iter().enumerate() {
            taken.apply(cmd.clone(), 2 + i as u64);
        }
        let retries: Vec<Command> = (0..BATCH)
            .map(|p| {
                let mut c = hold(p);
                c.request_id = Uuid::from_u128(5_000_000 + u128::from(p));
                if let CommandBody::Inventory(InventoryCommand::Reserve {
                    reservation_id,
                    user_id,
                    ..
                }) = &mut c.body
                {
                    *reservation_id =
                        ids::reservation(&EVENT, &Uuid::from_u128(5_000_000 + u128::from(p)));
                    *user_id = Uuid::from_u128(20_000_000 + u128::from(p));
                }
                c
            })
            .collect();
        b.iter_batched(
            || taken.clone(),
            |mut m| {
                for (i, cmd) in retries.iter().enumerate() {
                    black_box(m.apply(cmd.clone(), 10_000 + i as u64));
                }
                m
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// A snapshot's cut of a busy event: all 10,000 pairs held, so 10,000
/// reservations and 10,000 remembered request ids.
fn snapshot(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot");
    let mut full = opened();
    for p in 0..10_000 {
        full.apply(hold(p), 2 + u64::from(p));
    }
    g.bench_function("freeze an event with 10,000 holds", |b| {
        b.iter(|| black_box(full.freeze()))
    });
    g.bench_function("dump an event with 10,000 holds", |b| {
        let frozen = full.freeze();
        b.iter(|| black_box(frozen.dump()))
    });
    // Encoding the dump (what a build writes) and decoding it (what an install or
    // a restart reads): as byte strings, as the snapshot body has them, and as the
    // sequences of u8 a `Vec<u8>` is to serde (the same bytes; earlier versions).
    let dump = full.dump();
    let body = SnapshotBody::of_dump(GroupKind::Inventory, dump.clone());
    let bytes = codec::encode(&body).expect("encode");
    let earlier = (GroupKind::Inventory, dump);
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("encode the dump as byte strings", |b| {
        b.iter(|| codec::encode(black_box(&body)))
    });
    g.bench_function("encode the dump as u8 sequences (earlier)", |b| {
        b.iter(|| codec::encode(black_box(&earlier)))
    });
    g.bench_function("decode the dump as byte strings", |b| {
        b.iter(|| codec::decode::<SnapshotBody>(black_box(&bytes)))
    });
    g.bench_function("decode the dump as u8 sequences (earlier)", |b| {
        b.iter(|| codec::decode::<(GroupKind, Vec<(Vec<u8>, Vec<u8>)>)>(black_box(&bytes)))
    });
    // What a frozen cut costs the applies that run while it is being dumped: the
    // first change to each shared node of a table copies that node.
    g.throughput(Throughput::Elements(u64::from(BATCH)));
    let releases: Vec<Command> = (0..BATCH)
        .map(|p| {
            command(
                3_000_000 + u128::from(p),
                20_000,
                InventoryCommand::Release {
                    event_id: EVENT,
                    reservation_id: ids::reservation(&EVENT, &Uuid::from_u128(u128::from(p))),
                    user_id: Uuid::from_u128(10_000_000 + u128::from(p)),
                },
            )
        })
        .collect();
    // A machine that shares nothing with `full` (a clone would share its tables).
    let dumped = full.dump();
    let unshared = || {
        GroupMachine::restore(
            GroupKind::Inventory,
            dumped.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
        )
        .expect("restore")
    };
    g.bench_function("apply 1000 releases while a cut is alive", |b| {
        b.iter_batched(
            || {
                let m = unshared();
                let cut = m.freeze();
                (m, cut)
            },
            |(mut m, cut)| {
                for (i, cmd) in releases.iter().enumerate() {
                    black_box(m.apply(cmd.clone(), 20_000 + i as u64));
                }
                (m, cut)
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("apply 1000 releases, no cut", |b| {
        b.iter_batched(
            unshared,
            |mut m| {
                for (i, cmd) in releases.iter().enumerate() {
                    black_box(m.apply(cmd.clone(), 20_000 + i as u64));
                }
                m
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn entries(c: &mut Criterion) {
    let mut g = c.benchmark_group("log entry");
    let e = entry(42, hold(7));
    let bytes = codec::encode(&e).expect("encode");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("encode a hold entry", |b| {
        b.iter(|| codec::encode(black_box(&e)))
    });
    g.bench_function("decode a hold entry", |b| {
        b.iter(|| codec::decode::<Entry>(black_box(&bytes)))
    });
    g.finish();
}

fn log_store(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // On the disk the node would use (the target dir), not a tmpfs.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let store = Store::open(dir.path(), "bench", 1, &StorageSettings::default()).expect("store");
    let mut log = LogStore::new(store, GroupId(1));
    let mut index = 0u64;
    let mut g = c.benchmark_group("log store");
    for n in [1u64, 64] {
        g.throughput(Throughput::Elements(n));
        g.bench_function(format!("append {n} entries, fsynced"), |b| {
            b.iter(|| {
                let batch: Vec<Entry> = (0..n)
                    .map(|k| entry(index + k + 1, hold((index + k) as u32 % (SEATS / 2))))
                    .collect();
                index += n;
                rt.block_on(log.write_entries(batch)).expect("append")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, inventory, snapshot, entries, log_store);
criterion_main!(benches);
