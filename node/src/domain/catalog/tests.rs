//! Catalog machine tests: commands through the group machine, persistence, restore.

use std::collections::BTreeMap;

use super::*;
use crate::domain::{Command, CommandBody, GroupKind, GroupMachine, Response};

fn venue(id: u128, seats: u32) -> NewVenue {
    NewVenue {
        venue_id: Uuid::from_u128(id),
        name: format!("Hall {id}"),
        city: "Springfield".into(),
        state: "IL".into(),
        country: "US".into(),
        timezone: "America/Chicago".into(),
        sections: vec![SectionSpec {
            name: "Floor".into(),
            rows: vec![
                RowSpec {
                    row: "A".into(),
                    seats,
                },
                RowSpec {
                    row: "B".into(),
                    seats,
                },
            ],
        }],
    }
}

fn nodes(n: u64) -> Vec<NodeRecord> {
    (1..=n)
        .map(|id| NodeRecord {
            node_id: id,
            peer_addr: format!("127.0.0.1:{}", 7100 + id),
            http_addr: format!("127.0.0.1:{}", 7000 + id),
        })
        .collect()
}

/// An event id whose first six bytes (the prefix ids inside the event carry)
/// differ for every `id`.
fn event_uuid(id: u128) -> Uuid {
    Uuid::from_u128((id << 80) | id)
}

fn event(id: u128, venue: u128) -> NewEvent {
    NewEvent {
        event_id: event_uuid(id),
        name: format!("Show {id}"),
        artist: "The Band".into(),
        description: String::new(),
        category: "Concert".into(),
        venue_id: Uuid::from_u128(venue),
        date_ms: 2_000_000,
        doors_open_ms: Some(1_900_000),
        on_sale_ms: 1_000_000,
        presale_start_ms: None,
        pricing_tiers: vec![TierSpec {
            tier_id: Uuid::from_u128(id + 1_000_000),
            name: "Floor".into(),
            price_cents: 15_000,
            fees_cents: 2_250,
            sections: vec!["floor".into()],
        }],
        queue: None,
        image_url: None,
    }
}

fn cmd(req: u128, at: i64, body: CatalogCommand) -> Command {
    Command {
        request_id: Uuid::from_u128(req),
        stamped_ms: at,
        body: CommandBody::Catalog(body),
    }
}

/// Applies commands and mirrors the changes into a map, as the storage adapter does.
fn run(cmds: Vec<Command>) -> (GroupMachine, BTreeMap<Vec<u8>, Vec<u8>>, Vec<Response>) {
    let mut m = GroupMachine::new(GroupKind::Catalog);
    let mut disk = BTreeMap::new();
    let mut out = Vec::new();
    for (i, c) in cmds.into_iter().enumerate() {
        let (r, changes) = m.apply(c, i as u64 + 1);
        for ch in changes {
            match ch {
                Change::Put(k, v) => {
                    disk.insert(k, v);
                }
                Change::Delete(k) => {
                    disk.remove(&k);
                }
            }
        }
        out.push(r);
    }
    (m, disk, out)
}

#[test]
fn creates_venues_and_refuses_duplicates_and_bad_input() {
    let mut bad = venue(3, 10);
    bad.sections[0].rows[1].row = "A".into();
    let (m, _, out) = run(vec![
        cmd(1, 10, CatalogCommand::CreateVenue(venue(1, 30))),
        cmd(2, 11, CatalogCommand::CreateVenue(venue(1, 5))),
        cmd(3, 12, CatalogCommand::CreateVenue(bad)),
    ]);
    assert_eq!(
        out[0],
        Response::Catalog(CatalogResponse::VenueCreated {
            venue_id: Uuid::from_u128(1),
            capacity: 60
        })
    );
    assert_eq!(
        out[1],
        Response::Catalog(CatalogResponse::Rejected(CatalogRejection::VenueExists(
            Uuid::from_u128(1)
        )))
    );
    assert!(
        matches!(&out[2], Response::Catalog(CatalogResponse::Rejected(CatalogRejection::Invalid(m))) if m.contains("appears twice"))
    );
    let c = m.catalog().expect("test value");
    assert_eq!(c.venue_count(), 1);
    assert_eq!(
        c.venue(&Uuid::from_u128(1)).expect("test value").created_ms,
        10
    );
}

#[test]
fn a_retried_request_returns_the_first_outcome() {
    let (m, _, out) = run(vec![
        cmd(7, 10, CatalogCommand::CreateVenue(venue(1, 30))),
        cmd(7, 20, CatalogCommand::CreateVenue(venue(1, 30))),
    ]);
    assert_eq!(out[0], out[1]);
    assert!(matches!(
        out[1],
        Response::Catalog(CatalogResponse::VenueCreated { .. })
    ));
    assert_eq!(m.catalog().expect("test value").venue_count(), 1);
}

#[test]
fn request_ids_are_forgotten_after_the_window_by_stamped_time() {
    let later = crate::domain::DEDUP_WINDOW_MS + 100;
    let (m, disk, _) = run(vec![
        cmd(7, 10, CatalogCommand::CreateVenue(venue(1, 30))),
        cmd(8, later, CatalogCommand::CreateVenue(venue(2, 30))),
    ]);
    assert_eq!(m.remembered_requests(), 1);
    assert_eq!(disk.keys().filter(|k| k[0] == b'd').count(), 1);
}

#[test]
fn minted_request_ids_are_forgotten_sooner_than_named_ones() {
    let minted = Uuid::new_v4();
    let named = Uuid::new_v5(&Uuid::NAMESPACE_OID, b"seats.reserve.user\nkey-1");
    let at = |id: Uuid, t: i64, v: u128| Command {
        request_id: id,
        stamped_ms: t,
        body: CommandBody::Catalog(CatalogCommand::CreateVenue(venue(v, 30))),
    };
    let window = crate::domain::MINTED_WINDOW_MS;
    let (m, disk, out) = run(vec![
        at(minted, 10, 1),
        at(named, 10, 2),
        // Within the minted window, both retries get their first outcome.
        at(minted, 10 + window, 1),
        at(named, 10 + window, 2),
        // Past it, only the named id is remembered.
        cmd(9, 11 + window, CatalogCommand::CreateVenue(venue(3, 30))),
    ]);
    assert_eq!(out[0], out[2]);
    assert_eq!(out[1], out[3]);
    assert_eq!(m.remembered_requests(), 2);
    assert_eq!(disk.keys().filter(|k| k[0] == b'd').count(), 2);
    let restored = GroupMachine::restore(
        GroupKind::Catalog,
        disk.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
    )
    .expect("restore");
    assert_eq!(restored, m);
    // A retry of the minted id now is a new request: the venue exists.
    let (_, _, again) = run(vec![
        at(minted, 10, 1),
        cmd(9, 11 + window, CatalogCommand::CreateVenue(venue(3, 30))),
        at(minted, 12 + window, 1),
    ]);
    assert_ne!(again[2], again[0]);
}

#[test]
fn genesis_counts_once_and_time_never_runs_backwards() {
    let (m, _, out) = run(vec![
        cmd(
            1,
            50,
            CatalogCommand::Genesis {
                cluster_uuid: Uuid::from_u128(100),
                nodes: nodes(3),
                token_key: vec![1; 32],
            },
        ),
        cmd(
            2,
            20,
            CatalogCommand::Genesis {
                cluster_uuid: Uuid::from_u128(200),
                nodes: nodes(5),
                token_key: vec![2; 32],
            },
        ),
        cmd(3, 30, CatalogCommand::CreateVenue(venue(1, 1))),
    ]);
    assert_eq!(
        out[1],
        Response::Catalog(CatalogResponse::Genesis {
            cluster_uuid: Uuid::from_u128(100)
        })
    );
    assert_eq!(
        m.catalog().expect("test value").cluster_uuid(),
        Some(Uuid::from_u128(100))
    );
    assert_eq!(m.clock_ms(), 50);
    assert_eq!(
        m.catalog().expect("test value").nodes().len(),
        3,
        "the second genesis registers nothing"
    );
    // The venue created by a command stamped 30 after time 50 is dated 50.
    assert_eq!(
        m.catalog()
            .expect("test value")
            .venue(&Uuid::from_u128(1))
            .expect("test value")
            .created_ms,
        50
    );
}

#[test]
fn persisted_changes_and_dump_restore_to_the_same_machine() {
    let cmds = (0..40u128)
        .map(|i| {
            let body = if i % 7 == 0 {
                CatalogCommand::Genesis {
                    cluster_uuid: Uuid::from_u128(i),
                    nodes: nodes(5),
                    token_key: vec![2; 32],
                }
            } else if i % 3 == 0 {
                CatalogCommand::CreateEvent {
                    event: Box::new(event(1000 + i % 17, i % 11)),
                    replication_factor: 3,
                }
            } else {
                CatalogCommand::CreateVenue(venue(i % 11, 1 + (i as u32 % 5)))
            };
            cmd(i % 13, i as i64 * 100_000, body)
        })
        .collect();
    let (m, disk, _) = run(cmds);
    let dumped: BTreeMap<_, _> = m.dump().into_iter().collect();
    assert_eq!(
        dumped, disk,
        "changes persisted must equal the machine's full dump"
    );
    let restored = GroupMachine::restore(
        GroupKind::Catalog,
        disk.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
    )
    .expect("test value");
    assert_eq!(restored, m);
}

#[test]
fn validation_bounds() {
    let mut v = venue(1, MAX_SEATS_PER_ROW + 1);
    assert!(v.validate().unwrap_err().contains("seats"));
    v.sections.clear();
    assert!(v.validate().unwrap_err().contains("sections"));
    let mut v = venue(1, 10);
    v.name = " ".into();
    assert!(v.validate().unwrap_err().contains("name"));
    assert_eq!(venue(1, 10).validate(), Ok(20));
}

#[test]
fn events_get_sequential_groups_and_least_loaded_placement() {
    let mut cmds = vec![
        cmd(
            1,
            1,
            CatalogCommand::Genesis {
                cluster_uuid: Uuid::from_u128(9),
                nodes: nodes(5),
                token_key: vec![2; 32],
            },
        ),
        cmd(2, 2, CatalogCommand::CreateVenue(venue(1, 10))),
    ];
    for i in 0..4u128 {
        cmds.push(cmd(
            10 + i,
            3,
            CatalogCommand::CreateEvent {
                event: Box::new(event(100 + i, 1)),
                replication_factor: 3,
            },
        ));
    }
    let (m, _, out) = run(cmds);
    let created: Vec<(u64, Vec<u64>)> = out[2..]
        .iter()
        .map(|r| match r {
            Response::Catalog(CatalogResponse::EventCreated {
                group_id, replicas, ..
            }) => (*group_id, replicas.clone()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        created,
        vec![
            (1, vec![1, 2, 3]),
            (2, vec![4, 5, 1]),
            (3, vec![2, 3, 4]),
            (4, vec![5, 1, 2])
        ]
    );
    let c = m.catalog().expect("test value");
    assert_eq!(
        c.event_of_group(3).expect("test value").spec.event_id,
        event_uuid(102)
    );
    let p = crate::domain::ids::prefix(&event_uuid(102));
    assert_eq!(
        c.event_by_prefix(&p).map(|e| e.spec.event_id),
        Some(event_uuid(102))
    );
}

#[test]
fn an_event_whose_id_prefix_is_taken_is_refused() {
    let mut clash = event(100, 1);
    clash.event_id = Uuid::from_u128(event_uuid(100).as_u128() ^ 1);
    let (_, _, out) = run(vec![
        cmd(
            1,
            1,
            CatalogCommand::Genesis {
                cluster_uuid: Uuid::from_u128(9),
                nodes: nodes(3),
                token_key: vec![2; 32],
            },
        ),
        cmd(2, 2, CatalogCommand::CreateVenue(venue(1, 10))),
        cmd(
            3,
            3,
            CatalogCommand::CreateEvent {
                event: Box::new(event(100, 1)),
                replication_factor: 3,
            },
        ),
        cmd(
            4,
            4,
            CatalogCommand::CreateEvent {
                event: Box::new(clash),
                replication_factor: 3,
            },
        ),
    ]);
    assert!(matches!(
        out[2],
        Response::Catalog(CatalogResponse::EventCreated { .. })
    ));
    assert_eq!(
        out[3],
        Response::Catalog(CatalogResponse::Rejected(CatalogRejection::IdPrefixTaken))
    );
}

#[test]
fn events_are_refused_for_unknown_venues_bad_tiers_and_too_few_nodes() {
    let mut bad_tier = event(2, 1);
    bad_tier.pricing_tiers[0].sections = vec!["Balcony".into()];
    let (_, _, out) = run(vec![
        cmd(
            1,
            1,
            CatalogCommand::Genesis {
                cluster_uuid: Uuid::from_u128(9),
                nodes: nodes(2),
                token_key: vec![3; 32],
            },
        ),
        cmd(2, 2, CatalogCommand::CreateVenue(venue(1, 10))),
        cmd(
            3,
            3,
            CatalogCommand::CreateEvent {
                event: Box::new(event(1, 7)),
                replication_factor: 1,
            },
        ),
        cmd(
            4,
            4,
            CatalogCommand::CreateEvent {
                event: Box::new(bad_tier),
                replication_factor: 1,
            },
        ),
        cmd(
            5,
            5,
            CatalogCommand::CreateEvent {
                event: Box::new(event(3, 1)),
                replication_factor: 3,
            },
        ),
        cmd(
            6,
            6,
            CatalogCommand::CreateEvent {
                event: Box::new(event(4, 1)),
                replication_factor: 2,
            },
        ),
        cmd(
            7,
            7,
            CatalogCommand::CreateEvent {
                event: Box::new(event(4, 1)),
                replication_factor: 2,
            },
        ),
    ]);
    let rejection = |r: &Response| match r {
        Response::Catalog(CatalogResponse::Rejected(x)) => Some(x.clone()),
        _ => None,
    };
    assert_eq!(
        rejection(&out[2]),
        Some(CatalogRejection::UnknownVenue(Uuid::from_u128(7)))
    );
    assert!(
        matches!(rejection(&out[3]), Some(CatalogRejection::Invalid(m)) if m.contains("Balcony"))
    );
    assert_eq!(
        rejection(&out[4]),
        Some(CatalogRejection::NotEnoughNodes { have: 2, need: 3 })
    );
    assert_eq!(rejection(&out[5]), None);
    assert_eq!(
        rejection(&out[6]),
        Some(CatalogRejection::EventExists(event_uuid(4)))
    );
}

#[test]
fn users_register_once_per_email() {
    let user = |id: u128, email: &str| NewUser {
        user_id: Uuid::from_u128(id),
        email: email.into(),
        name: "Fan".into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
    };
    let (m, _, out) = run(vec![
        cmd(
            1,
            1,
            CatalogCommand::RegisterUser(user(1, "fan@example.com")),
        ),
        cmd(
            2,
            2,
            CatalogCommand::RegisterUser(user(2, "fan@example.com")),
        ),
        cmd(
            3,
            3,
            CatalogCommand::RegisterUser(user(3, "Not@Normalized.com")),
        ),
    ]);
    assert_eq!(
        out[0],
        Response::Catalog(CatalogResponse::UserRegistered {
            user_id: Uuid::from_u128(1)
        })
    );
    assert_eq!(
        out[1],
        Response::Catalog(CatalogResponse::Rejected(CatalogRejection::EmailTaken))
    );
    assert!(matches!(
        &out[2],
        Response::Catalog(CatalogResponse::Rejected(CatalogRejection::Invalid(_)))
    ));
    let c = m.catalog().expect("test value");
    assert_eq!(
        c.user_by_email("fan@example.com").map(|u| u.user_id),
        Some(Uuid::from_u128(1))
    );
    assert_eq!(c.user(&Uuid::from_u128(2)), None);
}

#[test]
fn payment_methods_belong_to_their_user_and_the_oldest_is_the_default() {
    let user = |id: u128| NewUser {
        user_id: Uuid::from_u128(id),
        email: format!("fan{id}@example.com"),
        name: "Fan".into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
    };
    let card = |id: u128, owner: u128, last: &str| PaymentMethod {
        payment_method_id: Uuid::from_u128(id),
        user_id: Uuid::from_u128(owner),
        kind: "CARD".into(),
        brand: "Visa".into(),
        last_four: last.into(),
        exp_month: 12,
        exp_year: 2034,
        gateway_ref: "tok_visa".into(),
        billing_address: None,
        is_default: true,
        created_ms: 0,
    };
    let remove = |owner: u128, id: u128| CatalogCommand::RemovePaymentMethod {
        user_id: Uuid::from_u128(owner),
        payment_method_id: Uuid::from_u128(id),
    };
    let mut bad = card(104, 1, "42");
    bad.last_four = "42".into();
    let (m, disk, out) = run(vec![
        cmd(1, 1, CatalogCommand::RegisterUser(user(1))),
        cmd(2, 2, CatalogCommand::RegisterUser(user(2))),
        cmd(3, 3, CatalogCommand::AddPaymentMethod(card(101, 1, "4242"))),
        cmd(4, 4, CatalogCommand::AddPaymentMethod(card(102, 1, "4444"))),
        cmd(5, 5, CatalogCommand::AddPaymentMethod(card(103, 1, "8431"))),
        // Another user cannot remove user 1's card; unknown users own nothing.
        cmd(6, 6, remove(2, 101)),
        cmd(7, 7, CatalogCommand::AddPaymentMethod(card(105, 9, "4242"))),
        cmd(8, 8, CatalogCommand::AddPaymentMethod(bad)),
        // Removing the default promotes the oldest remaining card.
        cmd(9, 9, remove(1, 101)),
        cmd(10, 10, remove(1, 101)),
    ]);
    let added = |r: &Response| match r {
        Response::Catalog(CatalogResponse::PaymentMethodAdded(pm)) => pm.is_default,
        other => panic!("{other:?}"),
    };
    assert!(added(&out[2]), "the first card is the default");
    assert!(!added(&out[3]) && !added(&out[4]));
    let refused = |r: &Response| match r {
        Response::Catalog(CatalogResponse::Rejected(x)) => x.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(refused(&out[5]), CatalogRejection::UnknownPaymentMethod);
    assert_eq!(refused(&out[6]), CatalogRejection::UnknownUser);
    assert!(matches!(refused(&out[7]), CatalogRejection::Invalid(_)));
    assert_eq!(
        out[8],
        Response::Catalog(CatalogResponse::PaymentMethodRemoved)
    );
    assert_eq!(refused(&out[9]), CatalogRejection::UnknownPaymentMethod);
    let c = m.catalog().expect("a catalog");
    let mine: Vec<(String, bool)> = c
        .payment_methods_of(&Uuid::from_u128(1))
        .into_iter()
        .map(|pm| (pm.last_four.clone(), pm.is_default))
        .collect();
    assert_eq!(mine, vec![("4444".into(), true), ("8431".into(), false)]);
    assert!(c.payment_methods_of(&Uuid::from_u128(2)).is_empty());
    // Restore gives the same catalog.
    let restored = GroupMachine::restore(
        GroupKind::Catalog,
        disk.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
    )
    .expect("restore");
    assert_eq!(restored, m);
}

#[test]
fn a_user_has_at_most_twenty_payment_methods() {
    let mut cmds = vec![cmd(
        1,
        1,
        CatalogCommand::RegisterUser(NewUser {
            user_id: Uuid::from_u128(1),
            email: "fan@example.com".into(),
            name: "Fan".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        }),
    )];
    for i in 0..=MAX_METHODS_PER_USER as u128 {
        cmds.push(cmd(
            10 + i,
            10 + i as i64,
            CatalogCommand::AddPaymentMethod(PaymentMethod {
                payment_method_id: Uuid::from_u128(100 + i),
                user_id: Uuid::from_u128(1),
                kind: "CARD".into(),
                brand: "Visa".into(),
                last_four: "4242".into(),
                exp_month: 1,
                exp_year: 2030,
                gateway_ref: "tok_visa".into(),
                billing_address: Some("{\"city\":\"Springfield\"}".into()),
                is_default: false,
                created_ms: 0,
            }),
        ));
    }
    let (_, _, out) = run(cmds);
    assert_eq!(
        out.last(),
        Some(&Response::Catalog(CatalogResponse::Rejected(
            CatalogRejection::TooManyPaymentMethods {
                limit: MAX_METHODS_PER_USER
            }
        )))
    );
}

#[test]
fn queue_settings_are_bounded() {
    let with = |q: QueueSettings| {
        let mut e = event(1, 1);
        e.queue = Some(q);
        e.validate()
    };
    let ok = QueueSettings {
        enabled: true,
        max_size: 200_000,
        admission_per_second: 50,
        max_active_shoppers: 2_000,
        access_window_minutes: 10,
    };
    assert_eq!(with(ok.clone()), Ok(()));
    for bad in [
        QueueSettings {
            max_size: 0,
            ..ok.clone()
        },
        QueueSettings {
            max_size: u64::MAX,
            ..ok.clone()
        },
        QueueSettings {
            admission_per_second: u32::MAX,
            ..ok.clone()
        },
        QueueSettings {
            max_active_shoppers: u32::MAX,
            ..ok.clone()
        },
        QueueSettings {
            access_window_minutes: 100_000,
            ..ok.clone()
        },
    ] {
        assert!(with(bad.clone()).is_err(), "{bad:?}");
    }
}
