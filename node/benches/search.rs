//! Search over a catalog of 100,000 events (the pure search path every node runs
//! on its local catalog replica): `cargo bench -p boxoffice-node --bench search`.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use uuid::Uuid;

use boxoffice_node::domain::catalog::search::{words, EventQuery};
use boxoffice_node::domain::catalog::{
    CatalogCommand, NewEvent, NewVenue, NodeRecord, RowSpec, SectionSpec, TierSpec,
};
use boxoffice_node::domain::{Command, CommandBody, GroupKind, GroupMachine};

const EVENTS: u128 = 100_000;
const VENUES: u128 = 500;
const ARTISTS: [&str; 12] = [
    "Taylor Swift",
    "The Rolling Stones",
    "Beyonce",
    "Coldplay",
    "Metallica",
    "Adele",
    "Bad Bunny",
    "Ed Sheeran",
    "Billie Eilish",
    "Kendrick Lamar",
    "Dua Lipa",
    "Radiohead",
];
const CITIES: [&str; 10] = [
    "New York",
    "Los Angeles",
    "Chicago",
    "Houston",
    "Phoenix",
    "Philadelphia",
    "San Antonio",
    "San Diego",
    "Dallas",
    "Newark",
];
const CATEGORIES: [&str; 4] = ["Concert", "Sports", "Theater", "Comedy"];

fn cmd(req: u128, body: CatalogCommand) -> Command {
    Command {
        request_id: Uuid::from_u128(req),
        stamped_ms: 1_700_000_000_000,
        body: CommandBody::Catalog(body),
    }
}

/// A catalog with `VENUES` venues and `EVENTS` events, built through `apply`.
fn catalog() -> GroupMachine {
    let mut m = GroupMachine::new(GroupKind::Catalog);
    let mut index = 0;
    let mut apply = |m: &mut GroupMachine, c: Command| {
        index += 1;
        m.apply(c, index);
    };
    let nodes = (1..=3)
        .map(|id| NodeRecord {
            node_id: id,
            peer_addr: format!("127.0.0.1:{}", 7100 + id),
            http_addr: format!("127.0.0.1:{}", 7000 + id),
        })
        .collect();
    apply(
        &mut m,
        cmd(
            1,
            CatalogCommand::Genesis {
                cluster_uuid: Uuid::from_u128(9),
                nodes,
                token_key: vec![1; 32],
            },
        ),
    );
    for v in 0..VENUES {
        apply(
            &mut m,
            cmd(
                10 + v,
                CatalogCommand::CreateVenue(NewVenue {
                    venue_id: Uuid::from_u128(1_000 + v),
                    name: format!("Arena {v}"),
                    city: CITIES[(v % 10) as usize].into(),
                    state: "NA".into(),
                    country: "US".into(),
                    timezone: "UTC".into(),
                    sections: vec![SectionSpec {
                        name: "Floor".into(),
                        rows: vec![RowSpec {
                            row: "A".into(),
                            seats: 10,
                        }],
                    }],
                }),
            ),
        );
    }
    for e in 0..EVENTS {
        let event = NewEvent {
            event_id: Uuid::from_u128(((e + 1) << 80) | e),
            name: format!("{} World Tour night {e}", ARTISTS[(e % 12) as usize]),
            artist: ARTISTS[(e % 12) as usize].into(),
            description: String::new(),
            category: CATEGORIES[(e % 4) as usize].into(),
            venue_id: Uuid::from_u128(1_000 + e % VENUES),
            date_ms: 1_800_000_000_000 + (e as i64) * 3_600_000,
            doors_open_ms: None,
            on_sale_ms: 1_790_000_000_000,
            presale_start_ms: None,
            pricing_tiers: vec![TierSpec {
                tier_id: Uuid::from_u128(e),
                name: "Floor".into(),
                price_cents: 10_000,
                fees_cents: 1_500,
                sections: vec!["Floor".into()],
            }],
            queue: None,
            image_url: None,
        };
        apply(
            &mut m,
            cmd(
                1_000_000 + e,
                CatalogCommand::CreateEvent {
                    event: Box::new(event),
                    replication_factor: 3,
                },
            ),
        );
    }
    m
}

fn bench(c: &mut Criterion) {
    let m = catalog();
    let cat = m.catalog().expect("a catalog");
    assert_eq!(cat.events().count(), EVENTS as usize, "every event created");
    let query = |q: &str| EventQuery {
        words: words(q).collect(),
        ..EventQuery::default()
    };
    let mut g = c.benchmark_group("search 100k events");
    g.bench_function("query 'taylor swift' (1/12 match), page 1", |b| {
        let q = query("taylor swift");
        b.iter(|| black_box(cat.search_events(&q, 0, 20)))
    });
    g.bench_function("query 'radiohead newark' (1/60 match), page 1", |b| {
        let q = query("radiohead newark");
        b.iter(|| black_box(cat.search_events(&q, 0, 20)))
    });
    g.bench_function("query 'night 4242' (narrow), page 1", |b| {
        let q = query("night 4242");
        b.iter(|| black_box(cat.search_events(&q, 0, 20)))
    });
    g.bench_function("no words, city + category + month, page 1", |b| {
        let q = EventQuery {
            city: Some("chicago".into()),
            category: Some("concert".into()),
            from_ms: Some(1_800_000_000_000),
            until_ms: Some(1_802_592_000_000),
            ..EventQuery::default()
        };
        b.iter(|| black_box(cat.search_events(&q, 0, 20)))
    });
    g.bench_function("no filter at all (every event), page 1", |b| {
        let q = EventQuery::default();
        b.iter(|| black_box(cat.search_events(&q, 0, 20)))
    });
    g.finish();
    percentiles(cat);
}

/// p50 / p99 / max over 2,000 runs of each query, for docs/benchmarks.md (criterion
/// reports means and their confidence, not tails).
fn percentiles(cat: &boxoffice_node::domain::catalog::Catalog) {
    let cases = [
        (
            "taylor swift",
            EventQuery {
                words: words("taylor swift").collect(),
                ..EventQuery::default()
            },
        ),
        (
            "radiohead newark",
            EventQuery {
                words: words("radiohead newark").collect(),
                ..EventQuery::default()
            },
        ),
        (
            "night 4242",
            EventQuery {
                words: words("night 4242").collect(),
                ..EventQuery::default()
            },
        ),
        (
            "city+category+month",
            EventQuery {
                city: Some("chicago".into()),
                category: Some("concert".into()),
                from_ms: Some(1_800_000_000_000),
                until_ms: Some(1_802_592_000_000),
                ..EventQuery::default()
            },
        ),
        ("no filter", EventQuery::default()),
    ];
    println!("| query | matches | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|");
    for (name, q) in cases {
        let mut us: Vec<u128> = (0..2_000)
            .map(|_| {
                let t = std::time::Instant::now();
                black_box(cat.search_events(&q, 0, 20));
                t.elapsed().as_micros()
            })
            .collect();
        us.sort_unstable();
        let at = |f: f64| us[((us.len() as f64 * f) as usize).min(us.len() - 1)] as f64 / 1000.0;
        let (total, _) = cat.search_events(&q, 0, 20);
        println!(
            "| {name} | {total} | {:.2} | {:.2} | {:.2} |",
            at(0.5),
            at(0.99),
            us[us.len() - 1] as f64 / 1000.0
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
