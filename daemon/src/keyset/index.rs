//! Joining the chunks of a load into one [`KeySet`]: the digest index, and the duplicate checks
//! that need every key at once.
//!
//! The digest index is split into shards by one byte of the digest, and each shard is built by its
//! own thread, so on a million keys the random-access inserts (a cache miss each) run on every core.
//! Each shard also checks, in file order, that no secret — current, or a grace secret of a rotated
//! key — belongs to two keys, and the ids whose hash falls in the shard are sorted to find
//! duplicate ids without another hash table. Of all duplicates found, the one a sequential pass
//! would have met first is reported: the smallest position of the later key, an id before a secret.

use super::chunk::Chunk;
use super::limits::Limits;
use super::{DigestIndex, GraceIndex, KeySet, LoadError, Record, SkippedKey, Span};
use heare_auth_store::rate_limit::RateLimit;
use std::collections::hash_map::Entry;

/// Sets smaller than this are indexed in one shard on the calling thread.
const MIN_SHARDED_KEYS: usize = 32 * 1024;

/// The chunks of a load, addressed by global record position.
struct Layout<'a> {
    chunks: &'a [Chunk],
    /// Global position of each chunk's first record.
    offsets: Vec<u32>,
    total: usize,
}

impl Layout<'_> {
    fn id(&self, position: u32) -> &str {
        let index = self
            .offsets
            .partition_point(|&offset| offset <= position)
            .saturating_sub(1);
        let (Some(chunk), Some(&offset)) = (self.chunks.get(index), self.offsets.get(index)) else {
            return "";
        };
        let local = position.saturating_sub(offset) as usize;
        chunk
            .records
            .get(local)
            .map_or("", |record| chunk.text(record.id))
    }
}

/// Two keys that may not both load; `second` is the later one.
#[derive(Clone, Copy)]
struct Duplicate {
    first: u32,
    second: u32,
    same_id: bool,
}

impl Duplicate {
    fn secret(a: u32, b: u32) -> Self {
        Duplicate {
            first: a.min(b),
            second: a.max(b),
            same_id: false,
        }
    }

    /// What a sequential pass meets first comes first.
    fn order(&self) -> (u32, bool) {
        (self.second, !self.same_id)
    }

    fn into_error(self, layout: &Layout<'_>) -> LoadError {
        let second = layout.id(self.second).to_string();
        if self.same_id {
            LoadError::DuplicateId(second)
        } else {
            LoadError::DuplicateSecret {
                first: layout.id(self.first).to_string(),
                second,
            }
        }
    }
}

/// The earliest duplicate seen so far.
#[derive(Default)]
struct Earliest(Option<Duplicate>);

impl Earliest {
    fn note(&mut self, found: Duplicate) {
        if self.0.is_none_or(|known| found.order() < known.order()) {
            self.0 = Some(found);
        }
    }
}

struct Shard {
    by_digest: DigestIndex,
    grace: GraceIndex,
    duplicate: Earliest,
}

/// Joins `chunks` (in file order) into a key set, using up to `threads` threads.
pub(super) fn assemble(
    chunks: Vec<Chunk>,
    threads: usize,
) -> Result<(KeySet, Vec<SkippedKey>), LoadError> {
    let layout = Layout::of(&chunks)?;
    let shards = build_shards(&layout, shard_count(layout.total, threads));
    if let Some(found) = earliest_duplicate(&shards) {
        return Err(found.into_error(&layout));
    }
    let total = layout.total;
    let limits = limits_of(&chunks, &layout.offsets);
    drop(layout);
    let (arena, records, skipped) = concatenate(chunks, total);
    let (by_digest, grace): (Vec<_>, Vec<_>) = shards
        .into_iter()
        .map(|shard| (shard.by_digest, shard.grace))
        .unzip();
    let set = KeySet {
        usage: super::usage::slots(records.len()),
        limits: Limits::build(limits, records.len()),
        arena,
        records,
        by_digest: by_digest.into_boxed_slice(),
        grace: grace.into_boxed_slice(),
        log: super::LogPosition::default(),
    };
    Ok((set, skipped))
}

impl<'a> Layout<'a> {
    /// The global positions of `chunks`' records; fails when the set would not fit the `u32`
    /// spans and positions of the layout.
    fn of(chunks: &'a [Chunk]) -> Result<Self, LoadError> {
        let mut offsets = Vec::with_capacity(chunks.len());
        let mut total = 0usize;
        let mut arena_bytes = 0usize;
        for chunk in chunks {
            chunk.check_size()?;
            offsets.push(u32::try_from(total).map_err(|_| LoadError::TooLarge)?);
            total += chunk.records.len();
            arena_bytes += chunk.arena.len();
        }
        u32::try_from(total).map_err(|_| LoadError::TooLarge)?;
        u32::try_from(arena_bytes).map_err(|_| LoadError::TooLarge)?;
        Ok(Layout {
            chunks,
            offsets,
            total,
        })
    }
}

/// How many index shards a set of `total` keys gets with `threads` threads: one for a small set,
/// else a power of two (so that a digest picks its shard with a mask).
fn shard_count(total: usize, threads: usize) -> usize {
    if total < MIN_SHARDED_KEYS || threads < 2 {
        1
    } else {
        1 << threads.min(16).ilog2()
    }
}

/// Builds the `shards` index shards, one thread each (shard 0 on the calling thread).
fn build_shards(layout: &Layout<'_>, shards: usize) -> Vec<Shard> {
    std::thread::scope(|scope| {
        let others: Vec<_> = (1..shards)
            .map(|shard| scope.spawn(move || index_shard(layout, shard, shards)))
            .collect();
        let mut built = vec![index_shard(layout, 0, shards)];
        for other in others {
            built.push(
                other
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
        built
    })
}

/// Of the duplicates the shards found, the one a sequential pass meets first.
fn earliest_duplicate(shards: &[Shard]) -> Option<Duplicate> {
    let mut earliest = Earliest::default();
    for found in shards.iter().filter_map(|shard| shard.duplicate.0) {
        earliest.note(found);
    }
    earliest.0
}

/// The keys with their own rate limit, at their positions in the set, in order.
fn limits_of(chunks: &[Chunk], offsets: &[u32]) -> Vec<(u32, RateLimit)> {
    chunks
        .iter()
        .zip(offsets)
        .flat_map(|(chunk, &offset)| {
            chunk
                .limits
                .iter()
                .map(move |&(position, limit)| (position + offset, limit))
        })
        .collect()
}

/// The chunks' arenas as one arena, their records (spans shifted into it) as one list, and their
/// skipped keys, in file order. The caller checked that the arena fits `u32` spans.
fn concatenate(chunks: Vec<Chunk>, total: usize) -> (String, Vec<Record>, Vec<SkippedKey>) {
    let arena_bytes = chunks.iter().map(|chunk| chunk.arena.len()).sum::<usize>();
    let mut chunks = chunks.into_iter();
    let (mut arena, mut records, mut skipped) = match chunks.next() {
        Some(first) => (first.arena, first.records, first.skipped),
        None => (String::new(), Vec::new(), Vec::new()),
    };
    arena.reserve_exact(arena_bytes - arena.len());
    records.reserve_exact(total - records.len());
    for chunk in chunks {
        // Fits: the whole arena was checked against u32 by `Layout::of`.
        let base = arena.len() as u32;
        arena.push_str(&chunk.arena);
        let shift = |span: Span| Span {
            start: span.start + base,
            len: span.len,
        };
        records.extend(chunk.records.iter().map(|record| Record {
            id: shift(record.id),
            name: shift(record.name),
            metadata: shift(record.metadata),
            scopes: shift(record.scopes),
            expires_at: record.expires_at,
        }));
        skipped.extend(chunk.skipped);
    }
    arena.shrink_to_fit();
    records.shrink_to_fit();
    (arena, records, skipped)
}

/// Indexes the digests of shard `shard` of `shards`, and checks the ids of that shard.
fn index_shard(layout: &Layout<'_>, shard: usize, shards: usize) -> Shard {
    let mut duplicate = Earliest::default();
    let by_digest = index_digests(layout, shard, shards, &mut duplicate);
    let grace = index_grace(layout, shard, shards, &by_digest, &mut duplicate);
    check_ids(layout, shard, shards, &mut duplicate);
    Shard {
        by_digest,
        grace,
        duplicate,
    }
}

/// The shard's current secrets: digest → record position; a digest seen twice is a duplicate.
fn index_digests(
    layout: &Layout<'_>,
    shard: usize,
    shards: usize,
    duplicate: &mut Earliest,
) -> DigestIndex {
    let mut by_digest = DigestIndex::default();
    by_digest.reserve(layout.total / shards + layout.total / shards / 32 + 8);
    for (chunk, &offset) in layout.chunks.iter().zip(&layout.offsets) {
        for (local, digest) in chunk.digests.iter().enumerate() {
            if digest.shard(shards) != shard {
                continue;
            }
            let position = offset + local as u32;
            match by_digest.entry(*digest) {
                Entry::Vacant(slot) => {
                    slot.insert(position);
                }
                Entry::Occupied(first) => duplicate.note(Duplicate::secret(*first.get(), position)),
            }
        }
    }
    by_digest.shrink_to_fit();
    by_digest
}

/// The shard's grace secrets: digest → (record position, end of grace); a digest that is also a
/// current secret, or the grace secret of two keys, is a duplicate.
fn index_grace(
    layout: &Layout<'_>,
    shard: usize,
    shards: usize,
    by_digest: &DigestIndex,
    duplicate: &mut Earliest,
) -> GraceIndex {
    let mut grace = GraceIndex::default();
    for (chunk, &offset) in layout.chunks.iter().zip(&layout.offsets) {
        for &(digest, local, until) in &chunk.grace {
            if digest.shard(shards) != shard {
                continue;
            }
            let position = offset + local;
            if let Some(&current) = by_digest.get(&digest) {
                duplicate.note(Duplicate::secret(current, position));
            }
            match grace.entry(digest) {
                Entry::Vacant(slot) => {
                    slot.insert((position, until));
                }
                Entry::Occupied(first) => {
                    duplicate.note(Duplicate::secret(first.get().0, position));
                }
            }
        }
    }
    grace.shrink_to_fit();
    grace
}

/// Finds ids used by two keys among the ids whose hash falls in the shard: sorted by hash, only
/// ids of equal hash are compared.
fn check_ids(layout: &Layout<'_>, shard: usize, shards: usize, duplicate: &mut Earliest) {
    let mut ids: Vec<(u64, u32)> = Vec::with_capacity(layout.total / shards + 8);
    for (chunk, &offset) in layout.chunks.iter().zip(&layout.offsets) {
        for (local, &hash) in chunk.id_hashes.iter().enumerate() {
            if (hash >> 56) as usize & (shards - 1) == shard {
                ids.push((hash, offset + local as u32));
            }
        }
    }
    ids.sort_unstable();
    for same_hash in ids.chunk_by(|a, b| a.0 == b.0) {
        for (later, &(_, position)) in same_hash.iter().enumerate().skip(1) {
            let id = layout.id(position);
            if let Some(&(_, first)) = same_hash[..later]
                .iter()
                .find(|(_, earlier)| layout.id(*earlier) == id)
            {
                duplicate.note(Duplicate {
                    first,
                    second: position,
                    same_id: true,
                });
                break;
            }
        }
    }
}
