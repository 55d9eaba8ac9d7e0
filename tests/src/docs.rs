//! Reading the documentation the way `tests/tests/docs_drift.rs` checks it: the tables marked
//! `<!-- drift-checked -->` (their columns by header), the code spans in a cell, the shell blocks
//! marked `<!-- runnable -->`, and the relative links between pages.
//!
//! The conventions are the docs' contract with the drift test (docs/testing.md describes them): a
//! marked table is the first table after its marker line, a runnable block is a ```` ```sh ````
//! fence on the line right after its marker.

use std::path::{Path, PathBuf};

/// The line that marks the next table as checked against the code.
pub const TABLE_MARKER: &str = "<!-- drift-checked -->";
/// The line that marks the next shell block as run by the tests.
pub const RUNNABLE_MARKER: &str = "<!-- runnable -->";

/// The repository's root (the tests crate is `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the repository")
        .to_path_buf()
}

/// `README.md` and every page of `docs/`, as (path relative to the root, text).
pub fn pages() -> Vec<(String, String)> {
    let root = repo_root();
    let mut names = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(root.join("docs"))
        .expect("read docs/")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    docs.sort();
    names.extend(docs);
    names
        .into_iter()
        .map(|name| {
            let text = std::fs::read_to_string(root.join(&name))
                .unwrap_or_else(|e| panic!("read {name}: {e}"));
            (name, text)
        })
        .collect()
}

/// One page's text, by its path relative to the root (`docs/configuration.md`).
pub fn page(name: &str) -> String {
    std::fs::read_to_string(repo_root().join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
}

/// A marked table: its headers (lower case) and its rows' cells, as written.
#[derive(Debug)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// The cells of the column headed `header`, one per row (empty when there is no such column).
    pub fn column(&self, header: &str) -> Vec<&str> {
        let Some(index) = self.headers.iter().position(|h| h == header) else {
            return Vec::new();
        };
        self.rows
            .iter()
            .map(|row| row.get(index).map(String::as_str).unwrap_or_default())
            .collect()
    }
}

/// Every table of `text` that follows a [`TABLE_MARKER`] line.
pub fn marked_tables(text: &str) -> Vec<Table> {
    let lines: Vec<&str> = text.lines().collect();
    let mut tables = Vec::new();
    for (at, line) in lines.iter().enumerate() {
        if line.trim() != TABLE_MARKER {
            continue;
        }
        let mut rows = lines[at + 1..]
            .iter()
            .skip_while(|l| l.trim().is_empty())
            .take_while(|l| l.trim_start().starts_with('|'))
            .map(|l| cells(l));
        let Some(headers) = rows.next() else {
            panic!("a {TABLE_MARKER} line is not followed by a table");
        };
        let headers = headers.iter().map(|h| h.to_lowercase()).collect();
        let rows = rows.skip(1).collect(); // the |---| line
        tables.push(Table { headers, rows });
    }
    tables
}

/// The cells of one table row; `\|` inside a cell is a literal bar.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    let mut cells = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                chars.next();
                cells.last_mut().expect("one cell").push('|');
            }
            '|' => cells.push(String::new()),
            _ => cells.last_mut().expect("one cell").push(c),
        }
    }
    cells.into_iter().map(|c| c.trim().to_string()).collect()
}

/// The text of every `code span` in `cell`.
pub fn code_spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// A shell block marked runnable: the page it is on, its first line's number, and its text.
#[derive(Debug)]
pub struct Runnable {
    pub page: String,
    pub line: usize,
    pub script: String,
}

/// Every ```` ```sh ```` block right after a [`RUNNABLE_MARKER`] line, on every page.
pub fn runnable_blocks() -> Vec<Runnable> {
    let mut blocks = Vec::new();
    for (page, text) in pages() {
        let lines: Vec<&str> = text.lines().collect();
        for (at, line) in lines.iter().enumerate() {
            if line.trim() != RUNNABLE_MARKER {
                continue;
            }
            assert_eq!(
                lines.get(at + 1).map(|l| l.trim()),
                Some("```sh"),
                "{page}:{}: {RUNNABLE_MARKER} must be followed by a ```sh block",
                at + 1
            );
            let script: Vec<&str> = lines[at + 2..]
                .iter()
                .take_while(|l| l.trim() != "```")
                .copied()
                .collect();
            blocks.push(Runnable {
                page: page.clone(),
                line: at + 3,
                script: script.join("\n") + "\n",
            });
        }
    }
    blocks
}

/// The relative links of `text` (`[text](target)`), as written; web links left out.
pub fn relative_links(text: &str) -> Vec<&str> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .filter(|target| !target.contains("://") && !target.contains(char::is_whitespace))
        .collect()
}

/// The anchors of `text`'s headings (GitHub's rule: lower case, punctuation dropped, spaces to
/// `-`) and of its `<a id="…">` tags; headings inside code blocks are not headings.
pub fn anchors(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        }
        if in_code {
            continue;
        }
        if let Some(heading) = line.strip_prefix('#') {
            let title = heading.trim_start_matches('#').trim().to_lowercase();
            let slug: String = title
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect();
            found.push(slug);
        }
        for tag in line.split("<a id=\"").skip(1) {
            if let Some(id) = tag.split('"').next() {
                found.push(id.to_string());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_table_is_read_by_its_headers_with_escaped_bars() {
        let text = "x\n<!-- drift-checked -->\n| File key | flag |\n|---|---|\n| `a` | `--cache PATH\\|none` |\n| | `--b` |\nafter\n| not | marked |\n";
        let tables = marked_tables(text);
        assert_eq!(tables.len(), 1);
        assert_eq!(tables[0].column("file key"), ["`a`", ""]);
        assert_eq!(tables[0].column("flag"), ["`--cache PATH|none`", "`--b`"]);
        assert_eq!(
            code_spans("`--s3-bucket BUCKET` and `X`"),
            ["--s3-bucket BUCKET", "X"]
        );
    }

    #[test]
    fn anchors_follow_the_heading_rule() {
        let text = "## The Python service's stats (heare-stats)\n```\n# not a heading\n```\n- <a id=\"no-going-back\"></a>x";
        assert_eq!(
            anchors(text),
            ["the-python-services-stats-heare-stats", "no-going-back"]
        );
    }
}
