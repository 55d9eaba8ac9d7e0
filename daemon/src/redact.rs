//! What of a client's text may reach the log. Every value a request brings that a log line shows
//! — the User-Agent, the original method and path a proxy forwards, any field added later — goes
//! through [`Redactor::field`], which hides three things, each covered run becoming `[redacted]`
//! ([`MARKER`]), and bounds the result to a number of characters.
//!
//! - Anything shaped like a secret: `sec_` followed by at least one character of the secret
//!   alphabet, with the whole run of them. That alphabet is base62, `0-9A-Za-z`: every secret the
//!   Python service and heare-authctl generate is `sec_` and 60 of them (`heare_auth_client::
//!   token`), and nothing else follows the prefix. One character is enough, so a truncated or
//!   mistyped secret is hidden too (and a route named `/sec_reports` with it); `sec_` alone is
//!   not, since it is the fixed prefix that `secret_prefix` already logs.
//! - A secret's body without its prefix: any run of at least [`MIN_BARE_BODY`] (40) base62
//!   characters, whatever comes before it — so a secret whose prefix was escaped (`%73ec_…`),
//!   spelled in overlong UTF-8 (`%C1%B3ec_…`, which decodes to no `s`) or cut off is still
//!   hidden. A long hex digest or a JWT segment in a path goes with it. Key ids (`key_` and 19
//!   base62 characters, 23 in all) are never hidden for their shape: they name a key, they do
//!   not open it, and their run of 19 is far below the bound.
//! - The secret presented in this very request, wherever it occurs, overlapping occurrences
//!   included (`hunter2hunter2hunter2` holds two): an imported secret may have any shape, and
//!   only the request knows it. It wins over a key id: if it is part of one in the text, that
//!   part is hidden. A presented secret under [`MIN_MARKED_BYTES`] would shred the text if each
//!   occurrence were marked (a one-character secret matches every such character), so a field
//!   that holds one becomes the marker whole. heare-authctl's `import` refuses only an empty
//!   secret, so such secrets exist.
//!
//! Covered runs that overlap or touch become one marker. Text next to a marker can spell the
//! secret again (a secret ending in `d]`, or holding the marker): a result that still contains
//! the presented secret becomes the marker whole. A secret that is itself part of the marker
//! (`red`, `[redacted]`) cannot be hidden by it, and is no secret: this paragraph prints it. A
//! run that crosses the bound is hidden whole, so no prefix of a secret is left at the cut.
//!
//! This runs on every verify, so a field with nothing to hide costs no allocation (the text is
//! borrowed back) and one left-to-right walk over its first `limit` characters (plus a presented
//! secret's length) with memchr's vectorised `memmem` for `sec_` and for the secret, and a scan
//! for long base62 runs that reads a few bytes per 40 of text made of short words (a long run is
//! read at most twice); no regex. A presented secret that is itself a `sec_` run (every generated
//! one) is not searched for: the run covers it wherever it occurs. Measured (callgrind, release,
//! instructions per field, the call and dropping its result included): 275 for an empty value,
//! 390 for a 30-character User-Agent, 665 for a 110-character one with a generated secret
//! presented, 1,240 with a word presented (memchr builds a searcher for it), 720 for a short path
//! with a word; hiding a secret in a path and allocating the result, 3,150. The scan for long runs
//! added 40 to 115 to each field with nothing to hide. Writing the line itself takes about 5,500
//! (`logging`). A hostile periodic secret (`aaaa…` in `aaaa…`) costs one search per overlapping
//! occurrence that ends before the bound, each as long as the secret: at most the bound's bytes
//! squared.

use memchr::memmem;
use std::borrow::Cow;
use std::sync::LazyLock;

/// What a hidden run is replaced by.
pub const MARKER: &str = "[redacted]";

/// The fixed start of every generated secret.
pub const SECRET_PREFIX: &str = "sec_";

/// A presented secret shorter than this (in bytes) hides the whole field it occurs in.
pub const MIN_MARKED_BYTES: usize = 8;

/// A run of at least this many base62 characters is hidden whatever precedes it: a secret's body
/// (60) without its prefix, or most of it. Key ids have 19 after `key_`.
pub const MIN_BARE_BODY: usize = 40;

static PREFIX_FINDER: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(SECRET_PREFIX));

/// Hides secrets in a request's text; built once per request from the secret it presents.
#[derive(Debug, Clone, Copy)]
pub struct Redactor<'s> {
    /// The presented secret; empty when there is none.
    presented: &'s [u8],
}

impl<'s> Redactor<'s> {
    /// For a request that presents `secret` (`None`, or empty, when it presents none).
    pub fn new(secret: Option<&'s str>) -> Self {
        Redactor {
            presented: secret.map_or(&[][..], str::as_bytes),
        }
    }

    /// `text` fit for the log: at most `limit` characters, secret-shaped runs and the presented
    /// secret replaced by [`MARKER`]; borrowed when nothing had to be hidden.
    pub fn field<'t>(&self, text: &'t str, limit: usize) -> Cow<'t, str> {
        let cut = char_boundary_after(text, limit);
        let mut runs = Runs::new(text.as_bytes(), cut, self.presented);
        let Some(first) = runs.next() else {
            return Cow::Borrowed(&text[..cut]);
        };
        if self.presented.len() < MIN_MARKED_BYTES && runs.presented_found {
            return marker(limit);
        }
        let mut out = String::with_capacity(cut + MARKER.len());
        let mut copied = 0;
        for (start, end) in std::iter::once(first).chain(runs) {
            out.push_str(&text[copied..start]);
            out.push_str(MARKER);
            copied = end;
        }
        if copied < cut {
            out.push_str(&text[copied..cut]);
        }
        if !self.presented.is_empty() && memmem::find(out.as_bytes(), self.presented).is_some() {
            return marker(limit);
        }
        out.truncate(char_boundary_after(&out, limit));
        Cow::Owned(out)
    }

    /// Whether [`field`](Self::field) would hide anything anywhere in `text` (all of it read).
    pub fn would_hide(&self, text: &str) -> bool {
        let bytes = text.as_bytes();
        Runs::new(bytes, bytes.len(), self.presented)
            .next_start()
            .is_some()
    }
}

/// The marker alone, for a field hidden whole (cut to `limit` characters, as every field is).
fn marker(limit: usize) -> Cow<'static, str> {
    Cow::Borrowed(&MARKER[..char_boundary_after(MARKER, limit)])
}

/// The byte offset just after the first `limit` characters of `text` (its length if shorter).
fn char_boundary_after(text: &str, limit: usize) -> usize {
    if text.len() <= limit {
        return text.len();
    }
    text.char_indices()
        .nth(limit)
        .map_or(text.len(), |(at, _)| at)
}

/// Which bytes are base62 characters (one load per byte where a scan reads many).
static BASE62_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = (byte as u8).is_ascii_alphanumeric();
        byte += 1;
    }
    table
};

/// Whether `text` is a secret-shaped run from end to end: `sec_` and only base62 after it.
fn is_shaped(text: &[u8]) -> bool {
    // A fold without an early exit, which the compiler vectorises.
    let base62 = |body: &[u8]| {
        body.iter()
            .fold(true, |all, b| all & b.is_ascii_alphanumeric())
    };
    text.strip_prefix(SECRET_PREFIX.as_bytes())
        .is_some_and(|body| !body.is_empty() && base62(body))
}

/// The runs to hide that start before `cut`, in order, merged where they overlap or touch: each
/// `(start, end)` is a byte range of the text on character boundaries; the last may end past
/// `cut`, and none follows a run that does.
struct Runs<'a> {
    text: &'a [u8],
    cut: usize,
    presented: &'a [u8],
    /// Whether to look for the presented secret (it could occur before `cut`, and no `sec_` run
    /// would cover it anyway).
    searched: bool,
    next_presented: Option<(usize, usize)>,
    next_shaped: Option<(usize, usize)>,
    /// The next base62 run of at least [`MIN_BARE_BODY`] characters.
    next_bare: Option<(usize, usize)>,
    /// Whether an occurrence of the presented secret was found.
    presented_found: bool,
    done: bool,
}

impl<'a> Runs<'a> {
    fn new(text: &'a [u8], cut: usize, presented: &'a [u8]) -> Self {
        let fits = !presented.is_empty() && presented.len() <= text.len() && cut > 0;
        // A generated secret is a `sec_` run whole: wherever it occurs, that run covers it.
        let searched = fits && !(presented.len() >= MIN_MARKED_BYTES && is_shaped(presented));
        let mut runs = Runs {
            text,
            cut,
            presented,
            searched,
            next_presented: None,
            next_shaped: None,
            next_bare: None,
            presented_found: false,
            done: false,
        };
        runs.next_presented = runs.find_presented(0);
        runs.next_shaped = runs.find_shaped(0);
        runs.next_bare = runs.find_bare(0);
        runs
    }

    /// The first occurrence of the presented secret starting at or after `from` and before `cut`.
    fn find_presented(&mut self, from: usize) -> Option<(usize, usize)> {
        if !self.searched {
            return None;
        }
        // An occurrence that starts before `cut` ends before `cut + len`.
        let end = self.text.len().min(self.cut + self.presented.len() - 1);
        let start = from + memmem::find(self.text.get(from..end)?, self.presented)?;
        self.presented_found = true;
        Some((start, start + self.presented.len()))
    }

    /// The first secret-shaped run starting at or after `from` and before `cut`; its end is not
    /// looked for past `cut`.
    fn find_shaped(&self, mut from: usize) -> Option<(usize, usize)> {
        loop {
            let end = self.text.len().min(self.cut + SECRET_PREFIX.len() - 1);
            let start = from + PREFIX_FINDER.find(self.text.get(from..end)?)?;
            let body = start + SECRET_PREFIX.len();
            let alphabet = |at: &usize| self.text.get(*at).is_some_and(u8::is_ascii_alphanumeric);
            if alphabet(&body) {
                let stop = self.cut.max(body + 1);
                let end = (body + 1..stop).find(|at| !alphabet(at)).unwrap_or(stop);
                return Some((start, end));
            }
            from = body;
        }
    }

    /// The first run of at least [`MIN_BARE_BODY`] base62 characters starting at or after
    /// `from` (0 or the end of a run) and before `cut`; its end is not looked for past `cut`, but
    /// its length is, so a run that starts before `cut` and reaches the length after it counts.
    /// It reads a window of that length from its end: the last gap in it moves the window just
    /// past the gap, so each byte is read at most twice, and in a text of short words only a few
    /// per window.
    fn find_bare(&self, from: usize) -> Option<(usize, usize)> {
        let gap = |b: &u8| !BASE62_BYTES[usize::from(*b)];
        let mut start = from;
        while start < self.cut {
            let end = start + MIN_BARE_BODY;
            match self.text.get(start..end)?.iter().rposition(gap) {
                Some(at) => start += at + 1,
                None => {
                    let stop = self.cut.max(end);
                    let more = self.text[end..stop].iter().position(gap);
                    return Some((start, more.map_or(stop, |at| end + at)));
                }
            }
        }
        None
    }

    /// Where the next run starts, if one does before `cut`.
    fn next_start(&self) -> Option<usize> {
        let starts = [self.next_presented, self.next_shaped, self.next_bare];
        starts.into_iter().flatten().map(|(start, _)| start).min()
    }

    /// Takes the earliest of the next runs and finds the one of its kind after it.
    fn take_first(&mut self) -> Option<(usize, usize)> {
        let start = self.next_start()?;
        let at_start = |run: Option<(usize, usize)>| run.filter(|(at, _)| *at == start);
        if let Some(run) = at_start(self.next_presented) {
            self.next_presented = self.find_presented(run.0 + 1);
            Some(run)
        } else if let Some(run) = at_start(self.next_shaped) {
            // `sec_` cannot overlap itself: the next one starts after this one's `_`.
            self.next_shaped = self.find_shaped(run.0 + SECRET_PREFIX.len());
            Some(run)
        } else {
            let run = self.next_bare?;
            self.next_bare = self.find_bare(run.1);
            Some(run)
        }
    }
}

impl Iterator for Runs<'_> {
    type Item = (usize, usize);

    fn next(&mut self) -> Option<(usize, usize)> {
        if self.done {
            return None;
        }
        let (start, mut end) = self.take_first()?;
        // Nothing past the cut is shown, so a run that reaches it takes no more in.
        while end < self.cut && self.next_start().is_some_and(|next| next <= end) {
            if let Some((_, later)) = self.take_first() {
                end = end.max(later);
            }
        }
        self.done = end >= self.cut;
        Some((start, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "sec_1AbCdEfGh123456789012345678901234567890123456789012345xYz789";

    fn hidden(text: &str, presented: Option<&str>) -> String {
        Redactor::new(presented).field(text, 256).into_owned()
    }

    #[test]
    fn nothing_to_hide_is_borrowed() {
        let redactor = Redactor::new(Some("hunter2hunter2"));
        for text in [
            "",
            "/orders/7",
            "curl/8.5.0",
            "sec_",
            "/sec_/x",
            "key_1AbCdEfGh0123456789",
            "/keys/key_0AbCdEfGh0123456789/key_0AbCdEfGh0123456789",
            &"a".repeat(MIN_BARE_BODY - 1),
        ] {
            assert!(
                matches!(redactor.field(text, 256), Cow::Borrowed(t) if t == text),
                "{text}"
            );
        }
        assert!(matches!(redactor.field("abcdef", 3), Cow::Borrowed("abc")));
    }

    #[test]
    fn secret_shaped_runs_are_hidden_and_key_ids_are_not() {
        assert_eq!(hidden(&format!("/p/{SECRET}/x"), None), "/p/[redacted]/x");
        assert_eq!(
            hidden(&format!("/p;api_key={SECRET}"), None),
            "/p;api_key=[redacted]"
        );
        assert_eq!(hidden("a sec_0 b sec_ c", None), "a [redacted] b sec_ c");
        assert_eq!(hidden("xsec_0AbC-sec_1", None), "x[redacted]-[redacted]");
        assert_eq!(hidden("sec_0abcsec_1xyz", None), "[redacted]");
        assert_eq!(hidden("sec_sec_0ab", None), "[redacted]");
        assert_eq!(hidden("sec__sec_0ab", None), "sec__[redacted]");
        assert_eq!(hidden("SEC_0abc key_1AbC", None), "SEC_0abc key_1AbC");
        assert_eq!(
            hidden(&format!("key_0abc/{SECRET}"), None),
            "key_0abc/[redacted]"
        );
    }

    #[test]
    fn long_base62_runs_are_hidden_whatever_precedes_them() {
        let body = &SECRET[SECRET_PREFIX.len()..];
        assert_eq!(
            hidden(&format!("/p/%73ec_{body}"), None),
            "/p/%73ec_[redacted]"
        );
        assert_eq!(
            hidden(&format!("/p/%C1%B3ec_{body}"), None),
            "/p/%C1%B3ec_[redacted]"
        );
        assert_eq!(hidden(&format!("tool ({body})"), None), "tool ([redacted])");
        let forty = "A".repeat(MIN_BARE_BODY);
        assert_eq!(hidden(&format!("x-{forty}-y"), None), "x-[redacted]-y");
        let shorter = &forty[1..];
        assert_eq!(
            hidden(&format!("x-{shorter}-y"), None),
            format!("x-{shorter}-y")
        );
        // A run touching a `sec_` run or a key id is one run with it.
        assert_eq!(hidden(&format!("{forty}sec_1"), None), "[redacted]");
        assert_eq!(
            hidden(&format!("key_0AbCdEfGh0123456789{forty}"), None),
            "key_[redacted]"
        );
        // The run starts before the bound and reaches 40 characters after it.
        let text = format!("{}{forty}", "/".repeat(250));
        assert_eq!(hidden(&text, None), format!("{}[redac", "/".repeat(250)));
        let text = format!("{}{shorter}", "/".repeat(250));
        assert!(matches!(hidden_cow(&text), Cow::Borrowed(_)));
    }

    #[test]
    fn the_presented_secret_is_hidden_whatever_its_shape() {
        let word = Some("hunter2hunter2");
        assert_eq!(hidden("/p/hunter2hunter2/q", word), "/p/[redacted]/q");
        assert_eq!(hidden("hunter2hunter2hunter2", word), "[redacted]");
        assert_eq!(
            hidden("a hunter2hunter2 b hunter2hunter2", word),
            "a [redacted] b [redacted]"
        );
        assert_eq!(hidden("hunter2hunter2sec_0a", word), "[redacted]");
        assert_eq!(hidden("hunter2 hunter2", word), "hunter2 hunter2");
        // Part of a key id: the secret wins.
        assert_eq!(hidden("key_0hunter2hunter2x", word), "key_0[redacted]x");
    }

    #[test]
    fn short_secrets_hide_the_whole_field() {
        assert_eq!(hidden("/a/b/c", Some("b")), MARKER);
        assert_eq!(hidden("/a/b/c", Some("x")), "/a/b/c");
        assert_eq!(hidden("/pw/1234567", Some("1234567")), MARKER);
        assert_eq!(hidden("/pw/12345678", Some("12345678")), "/pw/[redacted]");
    }

    #[test]
    fn text_beside_a_marker_never_spells_the_secret() {
        // A secret ending like the marker: hiding the shaped run would write it out again.
        let tricky = Some("acted]-x-");
        assert_eq!(hidden("/sec_0abc]-x-", tricky), "/[redacted]]-x-");
        assert_eq!(hidden("/sec_0abc-x-", tricky), MARKER);
        let holding = Some("a[redacted]b");
        assert_eq!(hidden("xa[redacted]by", holding), "x[redacted]y");
    }

    #[test]
    fn the_bound_never_cuts_a_secret_in_two() {
        let text = format!("{}hunter2hunter2", "a-".repeat(125));
        let out = Redactor::new(Some("hunter2hunter2")).field(&text, 256);
        assert_eq!(out, format!("{}[redac", "a-".repeat(125)));
        let text = format!("{}{SECRET}", "a-".repeat(125));
        assert_eq!(hidden(&text, None), format!("{}[redac", "a-".repeat(125)));
        let text = format!("{}{SECRET} tail", "é".repeat(250));
        assert_eq!(hidden(&text, None).chars().count(), 256);
        // Beyond the bound: not read, not shown.
        let text = format!("{}{SECRET}", "a-".repeat(150));
        assert!(matches!(hidden_cow(&text), Cow::Borrowed(_)));
    }

    fn hidden_cow(text: &str) -> Cow<'_, str> {
        Redactor::new(None).field(text, 256)
    }

    #[test]
    fn would_hide_reads_everything() {
        let redactor = Redactor::new(Some("hunter2hunter2"));
        assert!(!redactor.would_hide("/orders/7"));
        assert!(redactor.would_hide(&format!("{}hunter2hunter2", "x/".repeat(500))));
        assert!(redactor.would_hide(&format!("{}sec_0", "x/".repeat(500))));
        assert!(redactor.would_hide(&format!("{}{}", "x/".repeat(500), "A".repeat(40))));
    }
}
