//! The catalog's search index, derived from events and venues (never stored): an
//! inverted index from lower-case words to events (name and artist words) and to
//! venues (name and city words). A query word matches every indexed word it is a
//! prefix of ("tay" finds "Taylor"); every query word must match; name and artist
//! matches weigh 3, venue and city matches 1.

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;

use super::{Catalog, Event};

/// A search over the catalog's events: every word must match; the other fields
/// filter exactly (city and category case-insensitively, dates as [from, until)).
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub words: Vec<String>,
    pub city: Option<String>,
    pub category: Option<String>,
    pub from_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

/// Lower-case alphanumeric words of `text`.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

impl Catalog {
    /// Matching events, most relevant first, then soonest, then by id: how many
    /// match, and the page `offset .. offset + limit`.
    pub fn search_events(
        &self,
        q: &EventQuery,
        offset: usize,
        limit: usize,
    ) -> (usize, Vec<&Event>) {
        let ix = &self.search;
        let city = q.city.as_deref().map(str::to_lowercase);
        let category = q.category.as_deref().map(str::to_lowercase);
        let keep = |d: &EventDoc| {
            !(q.from_ms.is_some_and(|f| d.date_ms < f)
                || q.until_ms.is_some_and(|t| d.date_ms >= t)
                || category.as_deref().is_some_and(|x| d.category != x)
                || city
                    .as_deref()
                    .is_some_and(|x| ix.venue(d).is_none_or(|v| v.city != x)))
        };
        let mut hits: Vec<(u32, i64, u32)> = if q.words.is_empty() {
            ix.docs
                .iter()
                .enumerate()
                .filter(|(_, d)| keep(d))
                .map(|(i, d)| (1, d.date_ms, i as u32))
                .collect()
        } else {
            ix.matches(&q.words)
                .into_iter()
                .filter_map(|(i, score)| {
                    let d = ix.docs.get(i as usize)?;
                    keep(d).then_some((score, d.date_ms, i))
                })
                .collect()
        };
        let total = hits.len();
        let order = |a: &(u32, i64, u32), b: &(u32, i64, u32)| {
            b.0.cmp(&a.0)
                .then(a.1.cmp(&b.1))
                .then_with(|| ix.ids[a.2 as usize].cmp(&ix.ids[b.2 as usize]))
        };
        // Only the first offset + limit need ordering.
        let want = offset.saturating_add(limit).min(total);
        if want > 0 && want < total {
            hits.select_nth_unstable_by(want - 1, order);
            hits.truncate(want);
        }
        hits.sort_by(order);
        let page = hits
            .into_iter()
            .skip(offset)
            .take(limit)
            .filter_map(|(_, _, i)| self.event(&ix.ids[i as usize]))
            .collect();
        (total, page)
    }
}

/// What the index knows of an event: its words, venue, date and lower-case
/// category.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EventDoc {
    venue: Uuid,
    words: Vec<String>,
    category: String,
    date_ms: i64,
}

/// What the index knows of a venue: its words and lower-case city.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VenueDoc {
    words: Vec<String>,
    city: String,
}

/// Events are numbered densely in the order they were indexed; postings are lists
/// of those numbers, and each event's and venue's own words are kept too. The
/// numbering depends on that order (creation, or key order after a restore), so
/// equality compares what is indexed, not how it is numbered; results never
/// depend on the numbering (ties are broken by event id).
#[derive(Debug, Clone, Default)]
pub struct SearchIndex {
    ids: Vec<Uuid>,
    docs: Vec<EventDoc>,
    event_words: BTreeMap<String, Vec<u32>>,
    venue_words: BTreeMap<String, Vec<Uuid>>,
    events_by_venue: HashMap<Uuid, Vec<u32>>,
    venues: HashMap<Uuid, VenueDoc>,
}

impl PartialEq for SearchIndex {
    fn eq(&self, other: &Self) -> bool {
        let docs = |ix: &SearchIndex| -> BTreeMap<Uuid, EventDoc> {
            ix.ids
                .iter()
                .copied()
                .zip(ix.docs.iter().cloned())
                .collect()
        };
        self.venues == other.venues && docs(self) == docs(other)
    }
}

impl Eq for SearchIndex {}

const EVENT_WEIGHT: u32 = 3;
const VENUE_WEIGHT: u32 = 1;

fn has_prefix(words: &[String], q: &str) -> bool {
    words.iter().any(|w| w.starts_with(q))
}

fn sorted_words<'a>(parts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut ws: Vec<String> = parts.into_iter().flat_map(words).collect();
    ws.sort();
    ws.dedup();
    ws
}

impl SearchIndex {
    pub fn add_event(&mut self, event: &Event) {
        let s = &event.spec;
        let n = self.ids.len() as u32;
        let ws = sorted_words([s.name.as_str(), s.artist.as_str()]);
        for w in &ws {
            self.event_words.entry(w.clone()).or_default().push(n);
        }
        self.events_by_venue.entry(s.venue_id).or_default().push(n);
        self.ids.push(s.event_id);
        self.docs.push(EventDoc {
            venue: s.venue_id,
            words: ws,
            category: s.category.to_lowercase(),
            date_ms: s.date_ms,
        });
    }

    pub fn add_venue(&mut self, venue: Uuid, name: &str, city: &str) {
        let ws = sorted_words([name, city]);
        for w in &ws {
            self.venue_words.entry(w.clone()).or_default().push(venue);
        }
        self.venues.insert(
            venue,
            VenueDoc {
                words: ws,
                city: city.to_lowercase(),
            },
        );
    }

    fn venue(&self, d: &EventDoc) -> Option<&VenueDoc> {
        self.venues.get(&d.venue)
    }

    /// An event's relevance for one query word: 3 if a word of its name or artist
    /// begins with it, plus 1 if a word of its venue's name or city does.
    fn score(&self, d: &EventDoc, q: &str) -> u32 {
        let venue = self.venue(d).is_some_and(|v| has_prefix(&v.words, q));
        EVENT_WEIGHT * u32::from(has_prefix(&d.words, q)) + VENUE_WEIGHT * u32::from(venue)
    }

    /// The events having a word, or a venue word, that begins with `q`.
    fn candidates<'a>(&'a self, q: &'a str) -> impl Iterator<Item = u32> + 'a {
        let direct = self
            .event_words
            .range(q.to_string()..)
            .take_while(move |(w, _)| w.starts_with(q))
            .flat_map(|(_, ids)| ids.iter().copied());
        let via_venue = self
            .venue_words
            .range(q.to_string()..)
            .take_while(move |(w, _)| w.starts_with(q))
            .flat_map(|(_, vs)| vs.iter())
            .flat_map(|v| self.events_by_venue.get(v).into_iter().flatten().copied());
        direct.chain(via_venue)
    }

    /// How many postings a word's candidates take to list (its cost).
    fn cost(&self, q: &str) -> usize {
        let direct: usize = self
            .event_words
            .range(q.to_string()..)
            .take_while(|(w, _)| w.starts_with(q))
            .map(|(_, ids)| ids.len())
            .sum();
        let via_venue: usize = self
            .venue_words
            .range(q.to_string()..)
            .take_while(|(w, _)| w.starts_with(q))
            .flat_map(|(_, vs)| vs.iter())
            .map(|v| self.events_by_venue.get(v).map_or(0, Vec::len))
            .sum();
        direct + via_venue
    }

    /// Events (by number) matching every word of `query`, with their relevance.
    /// Starts from the word with the fewest postings and checks the others on each
    /// candidate's own words, so one rare word makes the query cheap.
    fn matches(&self, query: &[String]) -> Vec<(u32, u32)> {
        let Some(seed) = query.iter().min_by_key(|q| self.cost(q)) else {
            return Vec::new();
        };
        let mut found: Vec<u32> = self.candidates(seed).collect();
        found.sort_unstable();
        found.dedup();
        found
            .into_iter()
            .filter_map(|i| {
                let d = self.docs.get(i as usize)?;
                let mut total = 0;
                for q in query {
                    let s = self.score(d, q);
                    if s == 0 {
                        return None;
                    }
                    total += s;
                }
                Some((i, total))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::catalog::NewEvent;

    fn event(id: u128, venue: Uuid, name: &str, artist: &str) -> Event {
        Event {
            spec: NewEvent {
                event_id: Uuid::from_u128(id),
                name: name.into(),
                artist: artist.into(),
                description: String::new(),
                category: "Concert".into(),
                venue_id: venue,
                date_ms: id as i64,
                doors_open_ms: None,
                on_sale_ms: 0,
                presale_start_ms: None,
                pricing_tiers: Vec::new(),
                queue: None,
                image_url: None,
            },
            group_id: id as u64,
            replicas: Vec::new(),
            created_ms: 0,
        }
    }

    #[test]
    fn every_word_must_match_a_prefix_and_names_weigh_more() {
        let mut ix = SearchIndex::default();
        let (msg, arena) = (Uuid::from_u128(1), Uuid::from_u128(2));
        ix.add_venue(msg, "Madison Square Garden", "New York");
        ix.add_venue(arena, "The Arena", "Newark");
        ix.add_event(&event(10, msg, "Eras Tour", "Taylor Swift"));
        ix.add_event(&event(11, arena, "Jazz Night", "Quartet"));
        ix.add_event(&event(12, arena, "New York Nights", "Band"));
        let q = |s: &str| {
            let mut m: Vec<(Uuid, u32)> = ix
                .matches(&words(s).collect::<Vec<_>>())
                .into_iter()
                .map(|(i, score)| (ix.ids[i as usize], score))
                .collect();
            m.sort();
            m
        };
        let (eras, jazz, york) = (
            Uuid::from_u128(10),
            Uuid::from_u128(11),
            Uuid::from_u128(12),
        );
        assert_eq!(q("taylor SWIFT"), vec![(eras, 6)]);
        assert_eq!(q("tay"), vec![(eras, 3)]);
        assert_eq!(q("jazz newark"), vec![(jazz, 4)]);
        // "new": an event word of one event, and a venue word of both venues.
        assert_eq!(q("new york"), vec![(eras, 1 + 1), (york, 3 + 1 + 3)]);
        assert!(q("taylor jazz").is_empty());
    }
}
