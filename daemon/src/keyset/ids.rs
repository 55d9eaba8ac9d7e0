//! Finding a key of a set by its id, for applying a change from the log ([`super::overlay`]).
//!
//! A set is indexed by the digest of its secrets only: verify never asks for an id. Applying a
//! change does (which key of the base does it replace or remove?), so the first change applied
//! over a base builds this index once, off the request path, and every later change over the
//! same base shares it. It is a sorted array of (32-bit hash of the id, position): 8 bytes a key,
//! 8 MB at a million keys, 4% of that set's resident memory (a `HashMap<String, u32>` of the same
//! keys would take over 60 MB; 64-bit hashes took 16 MB, 8.4% in `heare-auth-bench
//! --change-cost`, over the 5% a change may add), and a lookup is a binary search followed by
//! comparing the ids that share the hash (about 120 pairs share one among a million keys).

use super::KeySet;
use std::hash::{BuildHasher, RandomState};

/// The positions of a set's keys, by id.
pub struct IdIndex {
    hasher: RandomState,
    /// (hash of the id, position), sorted.
    entries: Box<[(u32, u32)]>,
}

impl IdIndex {
    /// Indexes every key of `set`.
    pub fn of(set: &KeySet) -> Self {
        let hasher = RandomState::new();
        let mut entries: Vec<(u32, u32)> = set
            .records
            .iter()
            .enumerate()
            .filter_map(|(position, record)| {
                let position = u32::try_from(position).ok()?;
                Some((hash32(&hasher, set.text(record.id)), position))
            })
            .collect();
        entries.sort_unstable();
        IdIndex {
            hasher,
            entries: entries.into_boxed_slice(),
        }
    }

    /// The position in `set` (the set this index was made of) of the key `id`.
    pub fn find(&self, set: &KeySet, id: &str) -> Option<u32> {
        let hash = hash32(&self.hasher, id);
        let first = self.entries.partition_point(|&(h, _)| h < hash);
        self.entries[first..]
            .iter()
            .take_while(|&&(h, _)| h == hash)
            .map(|&(_, position)| position)
            .find(|&position| {
                set.records
                    .get(position as usize)
                    .is_some_and(|record| set.text(record.id) == id)
            })
    }

    /// Bytes the index holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.entries.len() * std::mem::size_of::<(u32, u32)>()
    }
}

/// The top 32 bits of the id's 64-bit hash.
fn hash32(hasher: &RandomState, id: &str) -> u32 {
    (hasher.hash_one(id) >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_id_and_no_other() {
        let mut json = String::from("{\"keys\":[");
        for n in 0..500 {
            if n > 0 {
                json.push(',');
            }
            json.push_str(&format!("{{\"id\":\"key_{n}\",\"secret\":\"sec_{n}\"}}"));
        }
        json.push_str("]}");
        let (set, _) = KeySet::from_json(json.as_bytes()).unwrap();
        let ids = IdIndex::of(&set);
        for n in 0..500 {
            let position = ids.find(&set, &format!("key_{n}")).unwrap();
            assert_eq!(
                set.text(set.records[position as usize].id),
                format!("key_{n}")
            );
        }
        assert_eq!(ids.find(&set, "key_500"), None);
        assert_eq!(ids.find(&set, ""), None);
        assert_eq!(ids.heap_bytes(), 500 * 8);
    }
}
