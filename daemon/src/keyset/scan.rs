//! Walking key-file JSON by byte position: the top-level object, then the `keys` array one element
//! at a time.
//!
//! serde_json parses each value (a member name, an ignored member, one key object), but the walk
//! between values is ours, because it has to know *where* each key object starts and ends: that is
//! what lets [`super::load`] split the array between threads and check the split. The walk accepts
//! exactly what serde_json accepts for the whole document (whitespace, commas, one object, nothing
//! after it) and reports errors as a line and column, never with the file's text.

use super::LoadError;
use serde::Deserialize;
use serde::de::IgnoredAny;
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};

/// Why the walk stopped early, located in the file.
#[derive(Debug)]
pub(super) struct Fail {
    problem: Problem,
    line: usize,
    column: usize,
}

#[derive(Debug, Clone, Copy)]
enum Problem {
    Syntax(&'static str),
    Shape,
}

const EARLY_END: &str = "the file ends early (truncated?)";
const SYNTAX: &str = "syntax error";

impl Fail {
    fn at(json: &[u8], offset: usize, problem: Problem) -> Self {
        let (line, column) = line_column(json, offset);
        Fail {
            problem,
            line,
            column,
        }
    }

    fn syntax(json: &[u8], offset: usize) -> Self {
        let problem = if offset >= json.len() {
            EARLY_END
        } else {
            SYNTAX
        };
        Fail::at(json, offset, Problem::Syntax(problem))
    }

    pub(super) fn shape(json: &[u8], offset: usize) -> Self {
        Fail::at(json, offset, Problem::Shape)
    }

    /// A serde_json error from parsing `json[base..]`, placed in the whole file.
    fn from_serde(json: &[u8], base: usize, error: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        let problem = match error.classify() {
            Category::Syntax => Problem::Syntax(SYNTAX),
            Category::Eof => Problem::Syntax(EARLY_END),
            Category::Io => Problem::Syntax("read error"),
            Category::Data => Problem::Shape,
        };
        let (base_line, base_column) = line_column(json, base);
        let (line, column) = if error.line() <= 1 {
            (base_line, base_column + error.column().saturating_sub(1))
        } else {
            (base_line + error.line() - 1, error.column())
        };
        Fail {
            problem,
            line,
            column,
        }
    }

    pub(super) fn into_load_error(self) -> LoadError {
        let (line, column) = (self.line, self.column);
        match self.problem {
            Problem::Syntax(problem) => LoadError::Syntax {
                problem,
                line,
                column,
            },
            Problem::Shape => LoadError::Shape { line, column },
        }
    }
}

/// 1-based line and column of a byte offset.
fn line_column(json: &[u8], offset: usize) -> (usize, usize) {
    let before = &json[..offset.min(json.len())];
    let line = 1 + memchr::memchr_iter(b'\n', before).count();
    let line_start = memchr::memrchr(b'\n', before).map_or(0, |newline| newline + 1);
    (line, before.len() - line_start + 1)
}

/// The first position at or after `pos` that is not JSON whitespace.
pub(super) fn skip_whitespace(json: &[u8], mut pos: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = json.get(pos) {
        pos += 1;
    }
    pos
}

/// Parses one value starting at `pos` (after optional whitespace); returns it and the position
/// just after it.
pub(super) fn parse_one<'de, T: Deserialize<'de>>(
    json: &'de [u8],
    pos: usize,
) -> Result<(T, usize), Fail> {
    let rest = json.get(pos..).unwrap_or_default();
    let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<T>();
    match values.next() {
        Some(Ok(value)) => Ok((value, pos + values.byte_offset())),
        Some(Err(error)) => Err(Fail::from_serde(json, pos, &error)),
        None => Err(Fail::syntax(json, json.len())),
    }
}

/// The error for a value at `pos` that is not of the expected kind: a syntax error if it is not
/// JSON at all, else a shape error.
fn wrong_kind(json: &[u8], pos: usize) -> Fail {
    match parse_one::<IgnoredAny>(json, pos) {
        Ok(_) => Fail::shape(json, pos),
        Err(fail) => fail,
    }
}

/// Walks `{ …, "keys": [...], … }`, handing the position of the `keys` value to `keys`, which
/// returns the position after the array, and every other member's name and value position to
/// `other`, which returns the position after the value ([`skip_member`] checks its syntax and
/// skips it). A second `keys` member is refused: which of the two to serve would be ambiguous.
pub(super) fn walk_file(
    json: &[u8],
    mut keys: impl FnMut(usize) -> Result<usize, Fail>,
    mut other: impl FnMut(&str, usize) -> Result<usize, Fail>,
) -> Result<(), Fail> {
    let mut pos = skip_whitespace(json, 0);
    if json.get(pos) != Some(&b'{') {
        return Err(if pos >= json.len() {
            Fail::syntax(json, pos)
        } else {
            wrong_kind(json, pos)
        });
    }
    pos = skip_whitespace(json, pos + 1);
    let mut saw_keys = false;
    if json.get(pos) == Some(&b'}') {
        pos += 1;
    } else {
        loop {
            if json.get(pos) != Some(&b'"') {
                return Err(Fail::syntax(json, pos));
            }
            let (name, end) = parse_one::<Cow<'_, str>>(json, pos)?;
            pos = skip_whitespace(json, end);
            if json.get(pos) != Some(&b':') {
                return Err(Fail::syntax(json, pos));
            }
            pos = skip_whitespace(json, pos + 1);
            if name == "keys" {
                if saw_keys {
                    return Err(Fail::shape(json, pos));
                }
                saw_keys = true;
                pos = keys(pos)?;
            } else {
                pos = other(&name, pos)?;
            }
            pos = skip_whitespace(json, pos);
            match json.get(pos) {
                Some(b',') => pos = skip_whitespace(json, pos + 1),
                Some(b'}') => {
                    pos += 1;
                    break;
                }
                _ => return Err(Fail::syntax(json, pos)),
            }
        }
    }
    if !saw_keys {
        return Err(Fail::shape(json, pos));
    }
    let end = skip_whitespace(json, pos);
    if end != json.len() {
        return Err(Fail::syntax(json, end));
    }
    Ok(())
}

/// The position after the member value at `pos`, checked for syntax and not kept.
pub(super) fn skip_member(json: &[u8], pos: usize) -> Result<usize, Fail> {
    Ok(parse_one::<IgnoredAny>(json, pos)?.1)
}

/// Where the keys array starts: the position of its first element, or `Err(end)` with the
/// position after `]` when it is empty.
pub(super) fn open_array(json: &[u8], pos: usize) -> Result<Result<usize, usize>, Fail> {
    if json.get(pos) != Some(&b'[') {
        return Err(if pos >= json.len() {
            Fail::syntax(json, pos)
        } else {
            wrong_kind(json, pos)
        });
    }
    let first = skip_whitespace(json, pos + 1);
    Ok(if json.get(first) == Some(&b']') {
        Err(first + 1)
    } else {
        Ok(first)
    })
}

/// How a run of [`elements`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stopped {
    /// The array ended; the position after its `]`.
    End(usize),
    /// The next element starts exactly at the stop position (given back).
    AtStop(usize),
    /// The run stopped before the element starting at this position: it passed the stop
    /// position without an element starting there, or it was cancelled.
    Before(usize),
}

/// How often a run looks at its cancel flag, in elements.
const CANCEL_CHECK: usize = 1024;

/// Parses array elements with `parse` (returns an element and the position after it), starting
/// with the one at `pos` and handing each to `each`, until the array ends, or an element would
/// start at or after `stop`.
pub(super) fn elements<'de, T>(
    json: &'de [u8],
    mut pos: usize,
    stop: Option<usize>,
    cancel: Option<&AtomicBool>,
    parse: impl Fn(&'de [u8], usize) -> Result<(T, usize), Fail>,
    mut each: impl FnMut(T),
) -> Result<Stopped, Fail> {
    let mut count = 0usize;
    loop {
        if let Some(stop) = stop {
            if pos == stop {
                return Ok(Stopped::AtStop(pos));
            }
            if pos > stop {
                return Ok(Stopped::Before(pos));
            }
        }
        count += 1;
        if count.is_multiple_of(CANCEL_CHECK) && cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Ok(Stopped::Before(pos));
        }
        let (element, end) = parse(json, pos)?;
        each(element);
        pos = skip_whitespace(json, end);
        match json.get(pos) {
            Some(b',') => pos = skip_whitespace(json, pos + 1),
            Some(b']') => return Ok(Stopped::End(pos + 1)),
            _ => return Err(Fail::syntax(json, pos)),
        }
    }
}

/// Up to `count` positions after `from`, spread evenly over the rest of the file, where an array
/// element of objects seems to start: a `{` after `}` and `,` (whitespace allowed between). They
/// are guesses (the bytes could sit inside a string); the loader only uses a guess once the run
/// before it has landed exactly on it.
pub(super) fn split_points(json: &[u8], from: usize, count: usize) -> Vec<usize> {
    let mut points = Vec::with_capacity(count);
    let span = json.len().saturating_sub(from);
    for part in 1..=count {
        let target = (from + span * part / (count + 1)).max(points.last().map_or(from, |&p| p + 1));
        if let Some(found) = element_start_at_or_after(json, target)
            && points.last().is_none_or(|&last| found > last)
        {
            points.push(found);
        }
    }
    points
}

fn element_start_at_or_after(json: &[u8], mut pos: usize) -> Option<usize> {
    while let Some(offset) = memchr::memchr(b'{', json.get(pos..)?) {
        let open = pos + offset;
        let before = &json[..open];
        let trimmed = before.trim_ascii_end();
        if let Some(without_comma) = trimmed.strip_suffix(b",")
            && without_comma.trim_ascii_end().ends_with(b"}")
        {
            return Some(open);
        }
        pos = open + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(json: &str) -> Result<Vec<u64>, LoadError> {
        let json = json.as_bytes();
        let mut found = Vec::new();
        walk_file(
            json,
            |pos| match open_array(json, pos)? {
                Err(end) => Ok(end),
                Ok(first) => {
                    match elements(json, first, None, None, parse_one::<u64>, |n| found.push(n))? {
                        Stopped::End(end) => Ok(end),
                        other => panic!("{other:?}"),
                    }
                }
            },
            |_, pos| skip_member(json, pos),
        )
        .map_err(Fail::into_load_error)?;
        Ok(found)
    }

    #[test]
    fn accepts_what_json_accepts() {
        assert_eq!(walk(r#"{"keys":[]}"#).unwrap(), Vec::<u64>::new());
        assert_eq!(
            walk(" {\n \"a\" : [1,{\"b\":null}] , \"keys\" : [ 1 ,2,\t3 ] ,\"z\":\"}\" } \n")
                .unwrap(),
            [1, 2, 3]
        );
        assert_eq!(walk(r#"{"k\u0065ys":[7]}"#).unwrap(), [7], "escaped name");
    }

    #[test]
    fn refuses_what_json_refuses() {
        for bad in [
            "",
            "  ",
            "[]",
            "{",
            r#"{"keys":[1,]}"#,
            r#"{"keys":[1 2]}"#,
            r#"{"keys":[1],}"#,
            r#"{"keys":[1]} x"#,
            r#"{"keys":[1]}{}"#,
            r#"{"keys" [1]}"#,
            r#"{keys:[1]}"#,
            r#"{"keys":[1],"keys":[2]}"#,
            r#"{"other":1}"#,
            r#"{"keys":{}}"#,
            r#"{"keys":[01]}"#,
            r#"{"a":tru,"keys":[]}"#,
            r#"{"keys":[1]"#,
        ] {
            assert!(walk(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn errors_are_located_in_the_whole_file() {
        let error = walk("{\"keys\": [\n  1,\n  2,\n  x\n]}").unwrap_err();
        assert_eq!(
            error,
            LoadError::Syntax {
                problem: SYNTAX,
                line: 4,
                column: 3
            }
        );
        assert!(matches!(
            walk("{\"keys\": [1, 2"),
            Err(LoadError::Syntax {
                problem: EARLY_END,
                ..
            })
        ));
    }

    #[test]
    fn runs_stop_at_or_before_the_stop_position() {
        let json = br#"[{"a":1}, {"a":2},{"a":3}]"#;
        let starts: Vec<usize> = (0..json.len()).filter(|&i| json[i] == b'{').collect();
        let mut seen = 0;
        let stopped = elements(
            json,
            1,
            Some(starts[1]),
            None,
            parse_one::<IgnoredAny>,
            |_| seen += 1,
        )
        .unwrap();
        assert_eq!((stopped, seen), (Stopped::AtStop(starts[1]), 1));
        let stopped = elements(
            json,
            1,
            Some(starts[1] - 1),
            None,
            parse_one::<IgnoredAny>,
            |_| {},
        )
        .unwrap();
        assert_eq!(stopped, Stopped::Before(starts[1]));
        let stopped =
            elements(json, starts[2], None, None, parse_one::<IgnoredAny>, |_| {}).unwrap();
        assert_eq!(stopped, Stopped::End(json.len()));
    }

    #[test]
    fn split_points_are_increasing_element_starts() {
        let json = br#"{"keys":[{"a":"},{"}, {"b":1} ,{"c":2},{"d":3}]}"#;
        let points = split_points(json, 9, 3);
        assert!(!points.is_empty());
        assert!(points.windows(2).all(|w| w[0] < w[1]));
        for point in points {
            assert_eq!(json[point], b'{');
        }
    }
}
