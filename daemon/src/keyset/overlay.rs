//! What is served: a base set loaded from the key object, plus a small overlay of the changes
//! applied from the change log since ([`ServedKeys`]).
//!
//! Applying a change never parses or rebuilds the base. The overlay holds, for every key a change
//! touched, its stored form after the change (or its removal), indexed as a small [`KeySet`] of
//! its own, and the positions of the base keys it replaces or removes ("shadowed"). A verify
//! looks in the overlay first, then in the base, where a shadowed key counts as unknown; with an
//! empty overlay it is the base's verify and one more branch. Each application makes a new
//! `ServedKeys` (sharing the base) from the previous one's entries, so its cost is the overlay's
//! size, not the key set's; the reloader folds the overlay into a new base, by loading the key
//! object again, once it passes a bound.
//!
//! Usage counters of a key in the overlay live in the overlay's set: a key entering the overlay
//! starts from its base counter, a key staying in it keeps its counter, and `usage` lists a
//! shadowed base key only through its overlay entry, so a fold (a reload, which carries usage by
//! id) moves them into the new base once.

use super::ids::IdIndex;
use super::{
    Admission, KeySet, KeyView, LoadError, Plan, RateState, SkippedKey, UsageReading, Verdict,
};
use heare_auth_store::change::KeyChange;
use heare_auth_store::rate_limit::RateLimit;
use heare_auth_store::secret_hash::SecretDigest;
use heare_auth_store::timestamp::UnixMillis;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Why changes could not be applied over the set served; the reloader then loads the key object.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("change {seq} deletes key {id}, which the set does not hold")]
    UnknownKey { seq: u64, id: String },
    #[error("change {seq} gives key {second} the secret of key {first}: secrets must be unique")]
    DuplicateSecret {
        seq: u64,
        first: String,
        second: String,
    },
    #[error("change {seq} does not make a usable set of keys: {cause}")]
    Keys { seq: u64, cause: LoadError },
}

/// One key a change touched: its stored form now (`None`: removed), and the position of the base
/// key of the same id it shadows.
#[derive(Debug, Clone)]
pub struct OverlayEntry {
    key: Option<Map<String, Value>>,
    base_position: Option<u32>,
}

/// The keys served: a base and the changes applied over it.
pub struct ServedKeys {
    base: Arc<KeySet>,
    /// The base's keys by id, made by the first change applied over this base.
    base_ids: Option<Arc<IdIndex>>,
    /// Every key touched since the base, by id.
    entries: BTreeMap<String, OverlayEntry>,
    /// The present keys of `entries`, indexed as a set.
    overlay: KeySet,
    /// Base positions that `entries` replaced or removed, sorted.
    shadowed: Box<[u32]>,
    /// The number of the last change contained; `None` when the set follows no log.
    change_seq: Option<u64>,
}

impl ServedKeys {
    /// A freshly loaded base with nothing over it, at the base's own place in the log.
    pub fn new(base: KeySet) -> Self {
        let change_seq = base.log_position().change_seq;
        ServedKeys {
            base: Arc::new(base),
            base_ids: None,
            entries: BTreeMap::new(),
            overlay: KeySet::empty(),
            shadowed: Box::new([]),
            change_seq,
        }
    }

    /// A freshly loaded base (nothing over it) with its id index built now, when it follows a
    /// log: the first change applied over it then costs its own size, not the index's build
    /// (~100 ms at a million keys). `None` when there is nothing to build.
    pub fn with_id_index(&self) -> Option<ServedKeys> {
        let follows = self.change_seq.is_some() && self.store_id().is_some();
        if self.base_ids.is_some() || !self.entries.is_empty() || !follows {
            return None;
        }
        Some(ServedKeys {
            base: self.base.clone(),
            base_ids: Some(Arc::new(IdIndex::of(&self.base))),
            entries: BTreeMap::new(),
            overlay: KeySet::empty(),
            shadowed: Box::new([]),
            change_seq: self.change_seq,
        })
    }

    /// The number of the last change of the log the served keys contain; `None` when the key
    /// object names no place in a log (a writer without one wrote it last).
    pub fn change_seq(&self) -> Option<u64> {
        self.change_seq
    }

    /// The store identity changes must carry to be applied here.
    pub fn store_id(&self) -> Option<&str> {
        self.base.log_position().store_id.as_deref()
    }

    /// Keys touched since the base was loaded.
    pub fn overlay_len(&self) -> usize {
        self.entries.len()
    }

    /// Number of keys served.
    pub fn len(&self) -> usize {
        self.base.len() - self.shadowed.len() + self.overlay.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Looks a presented secret up at time `now`: the overlay first, then the base.
    pub fn verify(&self, secret: &str, now: UnixMillis) -> Verdict<'_> {
        let digest = SecretDigest::of_secret(secret);
        if self.entries.is_empty() {
            return match self.base.lookup(&digest) {
                Some((position, grace)) => self.base.judge(position, grace, now, 0),
                None => Verdict::Unknown,
            };
        }
        if let Some((position, grace)) = self.overlay.lookup(&digest) {
            return self.overlay.judge(position, grace, now, self.shift());
        }
        match self.base.lookup(&digest) {
            Some((position, _)) if self.is_shadowed(position) => Verdict::Unknown,
            Some((position, grace)) => self.base.judge(position, grace, now, 0),
            None => Verdict::Unknown,
        }
    }

    /// Counts a verification of `key` (a view of this set) at `now`.
    pub fn record_use(&self, key: &KeyView<'_>, now: UnixMillis) {
        self.record_use_at(key.position, key.previous_secret, now);
    }

    /// Decides one more request of `key` (a view of this set) under its rate limit at `now`
    /// ([`super::rate_clock`]).
    pub fn admit(&self, key: &KeyView<'_>, now: u64) -> Admission {
        let (set, position) = self.holder(key.position);
        set.limits.admit(position, now)
    }

    /// The rate limit of `key` (a view of this set), if it has one.
    pub fn limit_of(&self, key: &KeyView<'_>) -> Option<RateLimit> {
        let (set, position) = self.holder(key.position);
        set.limits.limit_at(position)
    }

    /// As [`ServedKeys::admit`] for the key at `position` (a view's), under `limit` instead of
    /// its own (a share of it, when the fleet backend cannot be asked); the key's own state.
    pub fn admit_under(&self, position: u32, limit: RateLimit, now: u64) -> Admission {
        let (set, position) = self.holder(position);
        set.limits.admit_under(position, limit, now)
    }

    /// Counts a refusal of the key at `position` (a view's) decided by the fleet backend, and
    /// says whether it is to be logged (at most once a second per key).
    pub fn refusal_log_due(&self, position: u32, now: u64) -> bool {
        let (set, position) = self.holder(position);
        set.limits.refused_elsewhere(position, now)
    }

    /// Counts a refusal of the key at `position` (a view's) that is not the key's to log.
    pub fn count_refusal(&self, position: u32) {
        let (set, position) = self.holder(position);
        set.limits.count_refusal(position);
    }

    /// Remembers the fleet backend's refusal of the key at `position` (a view's) until `until`
    /// ([`super::rate_clock`]).
    pub fn remember_refusal(&self, position: u32, until: u64) {
        let (set, position) = self.holder(position);
        set.limits.remember_refusal(position, until);
    }

    /// The fleet backend's refusal of the key at `position` (a view's), when it still stands at
    /// `now`: counted, and the answer to give.
    pub fn remembered_refusal(&self, position: u32, now: u64) -> Option<Admission> {
        let (set, position) = self.holder(position);
        set.limits.remembered_refusal(position, now)
    }

    /// Counts a verification of the key at `position` (a view's) at `now`.
    pub fn record_use_at(&self, position: u32, previous_secret: bool, now: UnixMillis) {
        let (set, position) = self.holder(position);
        set.record_use_at(position, previous_secret, now);
    }

    /// The set holding the key a view numbers `position`, and its position there.
    fn holder(&self, position: u32) -> (&KeySet, u32) {
        match position.checked_sub(self.shift()) {
            Some(position) if !self.entries.is_empty() => (&self.overlay, position),
            _ => (&self.base, position),
        }
    }

    /// Every served limited key's id with its rate state, for keys that have been used.
    pub fn rate_states(&self) -> impl Iterator<Item = (&str, RateState)> {
        let base = self
            .base
            .rate_states()
            .filter(|(id, _)| self.entries.is_empty() || !self.entries.contains_key(*id));
        base.chain(self.overlay.rate_states())
    }

    /// Adds rate states from an older set to the keys with the same ids: the later arrival
    /// time, and the refusals too when `count_refusals` (once per older set).
    pub fn absorb_rate_states<'a>(
        &self,
        earlier: impl IntoIterator<Item = (&'a str, RateState)>,
        count_refusals: bool,
    ) {
        let earlier: Vec<_> = earlier.into_iter().collect();
        self.overlay
            .absorb_rate_states(earlier.iter().copied(), count_refusals);
        self.base.absorb_rate_states(earlier, count_refusals);
    }

    /// Every served key's id with its usage: the base's keys not shadowed, then the overlay's.
    pub fn usage(&self) -> impl Iterator<Item = (&str, UsageReading)> {
        let base = self
            .base
            .usage()
            .enumerate()
            .filter(|&(position, _)| !self.is_shadowed(position as u32))
            .map(|(_, reading)| reading);
        base.chain(self.overlay.usage())
    }

    /// Adds usage read elsewhere (an older set, a saved file) to the keys with the same ids.
    pub fn absorb_usage<'a>(&self, earlier: impl IntoIterator<Item = (&'a str, UsageReading)>) {
        let earlier: Vec<_> = earlier.into_iter().collect();
        self.overlay.absorb_usage(earlier.iter().copied());
        self.base.absorb_usage(earlier);
    }

    /// Bytes held on the heap: the base, its id index and the overlay.
    pub fn heap_bytes(&self) -> usize {
        self.base.heap_bytes()
            + self.base_ids.as_ref().map_or(0, |ids| ids.heap_bytes())
            + self.overlay.heap_bytes()
    }

    /// The served keys with `changes` applied in order, the last being number `seq`; builds the
    /// base's id index on first use. Returns the keys the overlay had to skip (an unusable stored
    /// form, as a load skips it). Runs in the overlay's time, off the request path.
    ///
    /// `tolerant`: a removal of a key that is not served is no change (for changes over a key
    /// object just loaded, which may have skipped that key); otherwise it fails.
    pub fn apply<'c>(
        &self,
        seq: u64,
        changes: impl IntoIterator<Item = &'c KeyChange>,
        tolerant: bool,
    ) -> Result<(ServedKeys, Vec<SkippedKey>), ApplyError> {
        let base_ids = match &self.base_ids {
            Some(ids) => ids.clone(),
            None => Arc::new(IdIndex::of(&self.base)),
        };
        let mut entries = self.entries.clone();
        for change in changes {
            self.touch(&mut entries, &base_ids, seq, change, tolerant)?;
        }
        let (overlay, skipped) = index_entries(&entries, seq)?;
        let mut shadowed: Vec<u32> = entries.values().filter_map(|e| e.base_position).collect();
        shadowed.sort_unstable();
        let next = ServedKeys {
            base: self.base.clone(),
            base_ids: Some(base_ids),
            entries,
            overlay,
            shadowed: shadowed.into_boxed_slice(),
            change_seq: Some(seq),
        };
        next.check_unique_secrets(seq)?;
        next.overlay.absorb_usage(self.carried_usage(&next));
        next.overlay
            .absorb_rate_states(self.carried_rate_states(&next), true);
        Ok((next, skipped))
    }

    /// Records one key's change in `entries`; a removal of a key that is not served fails.
    fn touch(
        &self,
        entries: &mut BTreeMap<String, OverlayEntry>,
        base_ids: &IdIndex,
        seq: u64,
        change: &KeyChange,
        tolerant: bool,
    ) -> Result<(), ApplyError> {
        let (base_position, present) = match entries.get(&change.id) {
            Some(entry) => (entry.base_position, entry.key.is_some()),
            None => {
                let position = base_ids.find(&self.base, &change.id);
                (position, position.is_some())
            }
        };
        if change.key.is_none() && !present {
            if tolerant {
                return Ok(());
            }
            return Err(ApplyError::UnknownKey {
                seq,
                id: change.id.clone(),
            });
        }
        let entry = OverlayEntry {
            key: change.key.clone(),
            base_position,
        };
        entries.insert(change.id.clone(), entry);
        Ok(())
    }

    /// Fails when a secret of the overlay is also one of a base key it does not shadow.
    fn check_unique_secrets(&self, seq: u64) -> Result<(), ApplyError> {
        for (digest, position) in self.overlay.digests() {
            let clash = self
                .base
                .lookup(digest)
                .filter(|&(base, _)| !self.is_shadowed(base));
            if let Some((base, _)) = clash {
                return Err(ApplyError::DuplicateSecret {
                    seq,
                    first: self.base.id_at(base).unwrap_or_default().to_string(),
                    second: self.overlay.id_at(position).unwrap_or_default().to_string(),
                });
            }
        }
        Ok(())
    }

    /// The usage `next`'s overlay keys start with: their counter in this overlay, else their
    /// shadowed base key's.
    fn carried_usage<'a>(&'a self, next: &'a ServedKeys) -> Vec<(&'a str, UsageReading)> {
        let in_overlay: HashMap<&str, UsageReading> = self.overlay.usage().collect();
        next.entries
            .iter()
            .filter_map(|(id, entry)| {
                let reading = match in_overlay.get(id.as_str()) {
                    Some(&reading) => reading,
                    None => self.base.usage_at(entry.base_position?)?,
                };
                Some((id.as_str(), reading))
            })
            .collect()
    }

    /// The rate states `next`'s overlay keys start with: their state in this overlay, else their
    /// shadowed base key's.
    fn carried_rate_states<'a>(&'a self, next: &'a ServedKeys) -> Vec<(&'a str, RateState)> {
        let in_overlay: HashMap<&str, RateState> = self.overlay.rate_states().collect();
        next.entries
            .iter()
            .filter_map(|(id, entry)| {
                let state = match in_overlay.get(id.as_str()) {
                    Some(&state) => state,
                    None => self.base.limits.state(entry.base_position?)?,
                };
                Some((id.as_str(), state))
            })
            .collect()
    }

    /// Where the overlay's positions start in the views this set hands out.
    fn shift(&self) -> u32 {
        u32::try_from(self.base.records.len()).unwrap_or(u32::MAX)
    }

    fn is_shadowed(&self, position: u32) -> bool {
        !self.shadowed.is_empty() && self.shadowed.binary_search(&position).is_ok()
    }
}

/// The present keys of `entries` as a set, loaded by the same rules as a key file.
fn index_entries(
    entries: &BTreeMap<String, OverlayEntry>,
    seq: u64,
) -> Result<(KeySet, Vec<SkippedKey>), ApplyError> {
    let keys: Vec<&Map<String, Value>> = entries.values().filter_map(|e| e.key.as_ref()).collect();
    let json = serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap_or_default();
    let plan = Plan {
        threads: 1,
        min_parallel_bytes: usize::MAX,
        fast_path: true,
    };
    KeySet::from_json_with(&json, plan).map_err(|cause| ApplyError::Keys { seq, cause })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMillis = 1_750_000_000_000;

    fn base() -> ServedKeys {
        let json = br#"{"change_seq": 4, "store_id": "st_1", "keys": [
            {"id": "key_a", "secret": "sec_a"},
            {"id": "key_b", "secret": "sec_b", "name": "B"},
            {"id": "key_c", "secret": "sec_c"}]}"#;
        let (set, _) = KeySet::from_json(json).unwrap();
        ServedKeys::new(set)
    }

    fn key(id: &str, secret: &str) -> KeyChange {
        let hash = SecretDigest::of_secret(secret).to_field();
        let value = serde_json::json!({ "id": id, "secret_hash": hash, "name": "new" });
        KeyChange {
            id: id.into(),
            key: value.as_object().cloned(),
        }
    }

    fn removal(id: &str) -> KeyChange {
        KeyChange {
            id: id.into(),
            key: None,
        }
    }

    fn id_of(verdict: Verdict<'_>) -> Option<String> {
        match verdict {
            Verdict::Valid(view) => Some(view.id.to_string()),
            _ => None,
        }
    }

    #[test]
    fn the_log_position_comes_from_the_key_file() {
        let served = base();
        assert_eq!(served.change_seq(), Some(4));
        assert_eq!(served.store_id(), Some("st_1"));
        assert_eq!(served.len(), 3);
        assert_eq!(served.overlay_len(), 0);
    }

    #[test]
    fn adds_replacements_and_removals_shadow_the_base() {
        let served = base();
        let changes = [
            key("key_d", "sec_d"),
            key("key_b", "sec_b2"),
            removal("key_c"),
        ];
        let (next, skipped) = served.apply(7, &changes, false).unwrap();
        assert!(skipped.is_empty());
        assert_eq!(next.change_seq(), Some(7));
        assert_eq!(next.len(), 3);
        assert_eq!(next.overlay_len(), 3);
        assert_eq!(id_of(next.verify("sec_a", NOW)).as_deref(), Some("key_a"));
        assert_eq!(id_of(next.verify("sec_d", NOW)).as_deref(), Some("key_d"));
        assert_eq!(id_of(next.verify("sec_b2", NOW)).as_deref(), Some("key_b"));
        assert_eq!(next.verify("sec_b", NOW), Verdict::Unknown);
        assert_eq!(next.verify("sec_c", NOW), Verdict::Unknown);
        // The previous set is untouched: requests holding it finish with it.
        assert_eq!(id_of(served.verify("sec_c", NOW)).as_deref(), Some("key_c"));
        // A key removed and created again lives in the overlay.
        let (again, _) = next.apply(8, &[key("key_c", "sec_c3")], false).unwrap();
        assert_eq!(id_of(again.verify("sec_c3", NOW)).as_deref(), Some("key_c"));
        assert_eq!(again.len(), 4);
    }

    #[test]
    fn changes_that_do_not_apply_are_refused() {
        let served = base();
        let unknown = served.apply(5, &[removal("key_zz")], false).err().unwrap();
        assert!(
            matches!(unknown, ApplyError::UnknownKey { seq: 5, .. }),
            "{unknown}"
        );
        let (gone, _) = served.apply(5, &[removal("key_a")], false).unwrap();
        assert!(gone.apply(6, &[removal("key_a")], false).is_err());
        let clash = served
            .apply(5, &[key("key_e", "sec_a")], false)
            .err()
            .unwrap();
        assert!(
            matches!(&clash, ApplyError::DuplicateSecret { first, .. } if first == "key_a"),
            "{clash}"
        );
        assert!(!clash.to_string().contains("sec_a"));
        // Taking over the secret of a key removed in the same change is fine.
        assert!(
            served
                .apply(5, &[removal("key_a"), key("key_e", "sec_a")], false)
                .is_ok()
        );
    }

    #[test]
    fn usage_moves_with_a_key_into_the_overlay_and_is_listed_once() {
        let served = base();
        let Verdict::Valid(view) = served.verify("sec_b", NOW) else {
            panic!()
        };
        served.record_use(&view, NOW);
        served.record_use(&view, NOW + 1);
        let (next, _) = served.apply(5, &[key("key_b", "sec_b2")], false).unwrap();
        let Verdict::Valid(view) = next.verify("sec_b2", NOW) else {
            panic!()
        };
        next.record_use(&view, NOW + 2);
        let (later, _) = next.apply(6, &[key("key_x", "sec_x")], false).unwrap();
        let listed: Vec<_> = later
            .usage()
            .filter(|(id, _)| *id == "key_b")
            .map(|(_, reading)| reading.verifications)
            .collect();
        assert_eq!(listed, [3]);
        assert_eq!(later.usage().count(), 4);
    }
}
