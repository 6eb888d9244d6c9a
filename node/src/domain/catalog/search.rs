//! The catalog's search index, derived from events and venues (never stored): an
//! inverted index from lower-case words to events (name and artist words) and to
//! venues (name and city words). A query word matches every indexed word it is a
//! prefix of ("tay" finds "Taylor"); every query word must match; name and artist
//! matches weigh 3, venue and city matches 1.

use std::collections::{BTreeMap, BTreeSet, HashMap};

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

impl Catalog {
    /// Matching events, most relevant first, then soonest, then by id: how many
    /// match, and the page `offset .. offset + limit`.
    pub fn search_events(
        &self,
        q: &EventQuery,
        offset: usize,
        limit: usize,
    ) -> (usize, Vec<&Event>) {
        let scores = (!q.words.is_empty()).then(|| self.search.matches(&q.words));
        let city = q.city.as_deref().map(str::to_lowercase);
        let category = q.category.as_deref().map(str::to_lowercase);
        let candidates: Box<dyn Iterator<Item = &Event>> = match &scores {
            Some(s) => Box::new(s.keys().filter_map(|id| self.events.get(id))),
            None => Box::new(self.events.values()),
        };
        let mut hits: Vec<(u32, &Event)> = candidates
            .filter(|e| {
                let s = &e.spec;
                !(q.from_ms.is_some_and(|f| s.date_ms < f)
                    || q.until_ms.is_some_and(|t| s.date_ms >= t)
                    || category
                        .as_deref()
                        .is_some_and(|x| s.category.to_lowercase() != x)
                    || city.as_deref().is_some_and(|x| {
                        self.venues
                            .get(&s.venue_id)
                            .is_none_or(|v| v.city.to_lowercase() != x)
                    }))
            })
            .map(|e| {
                let score = scores
                    .as_ref()
                    .map_or(1, |s| s.get(&e.spec.event_id).copied().unwrap_or(0));
                (score, e)
            })
            .collect();
        let total = hits.len();
        let order = |a: &(u32, &Event), b: &(u32, &Event)| {
            b.0.cmp(&a.0)
                .then(a.1.spec.date_ms.cmp(&b.1.spec.date_ms))
                .then(a.1.spec.event_id.cmp(&b.1.spec.event_id))
        };
        // Only the first offset + limit need ordering.
        let keep = offset.saturating_add(limit).min(total);
        if keep > 0 && keep < total {
            hits.select_nth_unstable_by(keep - 1, order);
            hits.truncate(keep);
        }
        hits.sort_by(order);
        (
            total,
            hits.into_iter()
                .skip(offset)
                .take(limit)
                .map(|(_, e)| e)
                .collect(),
        )
    }
}

/// Lower-case alphanumeric words of `text`.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// Word → ids, for events and for venues.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchIndex {
    event_words: BTreeMap<String, BTreeSet<Uuid>>,
    venue_words: BTreeMap<String, BTreeSet<Uuid>>,
    events_by_venue: BTreeMap<Uuid, BTreeSet<Uuid>>,
}

const EVENT_WEIGHT: u32 = 3;
const VENUE_WEIGHT: u32 = 1;

impl SearchIndex {
    pub fn add_event(&mut self, event: Uuid, venue: Uuid, name: &str, artist: &str) {
        for w in words(name).chain(words(artist)) {
            self.event_words.entry(w).or_default().insert(event);
        }
        self.events_by_venue.entry(venue).or_default().insert(event);
    }

    pub fn add_venue(&mut self, venue: Uuid, name: &str, city: &str) {
        for w in words(name).chain(words(city)) {
            self.venue_words.entry(w).or_default().insert(venue);
        }
    }

    /// Events matching every word of `query`, with their relevance.
    pub fn matches(&self, query: &[String]) -> HashMap<Uuid, u32> {
        let mut result: Option<HashMap<Uuid, u32>> = None;
        for q in query {
            let mut scores: HashMap<Uuid, u32> = HashMap::new();
            for (_, events) in self
                .event_words
                .range(q.clone()..)
                .take_while(|(w, _)| w.starts_with(q.as_str()))
            {
                for e in events {
                    *scores.entry(*e).or_default() += EVENT_WEIGHT;
                }
            }
            for (_, venues) in self
                .venue_words
                .range(q.clone()..)
                .take_while(|(w, _)| w.starts_with(q.as_str()))
            {
                for v in venues {
                    for e in self.events_by_venue.get(v).into_iter().flatten() {
                        *scores.entry(*e).or_default() += VENUE_WEIGHT;
                    }
                }
            }
            result = Some(match result {
                None => scores,
                Some(prev) => prev
                    .into_iter()
                    .filter_map(|(e, s)| scores.get(&e).map(|t| (e, s + t)))
                    .collect(),
            });
            if result.as_ref().is_some_and(HashMap::is_empty) {
                break;
            }
        }
        result.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_must_match_a_prefix_and_names_weigh_more() {
        let mut ix = SearchIndex::default();
        let (msg, arena) = (Uuid::from_u128(1), Uuid::from_u128(2));
        ix.add_venue(msg, "Madison Square Garden", "New York");
        ix.add_venue(arena, "The Arena", "Newark");
        let (eras, other, york) = (
            Uuid::from_u128(10),
            Uuid::from_u128(11),
            Uuid::from_u128(12),
        );
        ix.add_event(eras, msg, "Eras Tour", "Taylor Swift");
        ix.add_event(other, arena, "Jazz Night", "Quartet");
        ix.add_event(york, arena, "New York Nights", "Band");
        let q = |s: &str| ix.matches(&words(s).collect::<Vec<_>>());
        assert_eq!(q("taylor SWIFT"), HashMap::from([(eras, 6)]));
        assert_eq!(q("tay"), HashMap::from([(eras, 3)]));
        assert_eq!(q("jazz newark"), HashMap::from([(other, 4)]));
        // "new" is a venue word of both venues' cities and an event word of one.
        let new = q("new york");
        assert_eq!(new.get(&york), Some(&(3 + 1 + 3)));
        assert_eq!(new.get(&eras), Some(&(1 + 1)));
        assert!(!new.contains_key(&other));
        assert!(q("taylor jazz").is_empty());
    }
}
