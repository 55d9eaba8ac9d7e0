//! Reading the code the way `tests/tests/docs_drift.rs` checks the docs against it: the flags and
//! `[env: …]` variables of a clap `--help`, the environment variables the sources read, and the
//! routes of the daemon's router.
//!
//! Environment reads are found in the source text, test code (`#[cfg(test)]` items) left out: a
//! literal argument of `env::var`/`env::var_os`, of a closure or parameter named `env`, or of a
//! closure defined over one of those (`let set = |name| env(name)…`); a constant read that way;
//! and every constant whose name ends in `_ENV` or `_VARIABLES`. Code that reads a variable in
//! another shape must follow one of these (docs/testing.md says so), or the drift test misses it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The long flags a clap `--help` text defines (`--store`, …), help and version left out.
pub fn help_flags(help: &str) -> BTreeSet<String> {
    help.lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with('-'))
        .filter_map(|line| {
            let definition = line.split("  ").next().unwrap_or(line);
            definition
                .split([',', ' '])
                .find(|word| word.starts_with("--"))
                .map(str::to_string)
        })
        .filter(|flag| flag != "--help" && flag != "--version")
        .collect()
}

/// The variables a clap `--help` text names as `[env: NAME]` (or `[env: NAME=value]`).
pub fn help_env(help: &str) -> BTreeSet<String> {
    help.split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split([']', '=']).next())
        .map(str::to_string)
        .collect()
}

/// The subcommands a clap `--help` text lists under `Commands:` (`help` left out).
pub fn help_commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| line.trim() != "Commands:")
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// The text of every `.rs` file under `dirs` (relative to `root`), test items removed.
pub fn sources(root: &Path, dirs: &[&str]) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for dir in dirs {
        collect_rs(&root.join(dir), &mut files);
    }
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            (path.display().to_string(), without_test_items(&text))
        })
        .collect()
}

fn collect_rs(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `text` without the items behind `#[cfg(test)]` (a module, a function, a `use`).
pub fn without_test_items(text: &str) -> String {
    const ATTRIBUTE: &str = "#[cfg(test)]";
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(ATTRIBUTE) {
        out.push_str(&rest[..at]);
        let item = &rest[at + ATTRIBUTE.len()..];
        rest = &item[item_end(item)..];
    }
    out.push_str(rest);
    out
}

/// Where the item starting `text` ends: after its `;`, or after the `}` closing its first `{`.
/// Strings, characters and comments are skipped so that braces inside them do not count.
fn item_end(text: &str) -> usize {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'/' if bytes.get(at + 1) == Some(&b'/') => {
                at += text[at..].find('\n').unwrap_or(text.len() - at);
            }
            b'/' if bytes.get(at + 1) == Some(&b'*') => {
                at += text[at..].find("*/").map_or(text.len() - at, |end| end + 2);
                continue;
            }
            b'"' => at = string_end(bytes, at),
            b'\'' => at = char_end(bytes, at),
            b'{' => depth += 1,
            b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return at + 1;
                }
            }
            b';' if depth == 0 => return at + 1,
            _ => {}
        }
        at += 1;
    }
    text.len()
}

/// The index of the closing quote of the string opening at `start` (raw strings included).
fn string_end(bytes: &[u8], start: usize) -> usize {
    let hashes = bytes[..start]
        .iter()
        .rev()
        .take_while(|b| **b == b'#')
        .count();
    let raw = start > hashes && bytes[start - hashes - 1] == b'r';
    let mut at = start + 1;
    while at < bytes.len() {
        match bytes[at] {
            b'\\' if !raw => at += 1,
            b'"' if bytes[at + 1..].iter().take(hashes).all(|b| *b == b'#') => {
                return at + hashes;
            }
            _ => {}
        }
        at += 1;
    }
    bytes.len()
}

/// The index of the closing quote of a character literal at `start`, or `start` for a lifetime.
fn char_end(bytes: &[u8], start: usize) -> usize {
    match (bytes.get(start + 1), bytes.get(start + 2)) {
        (Some(b'\\'), _) => bytes[start + 2..]
            .iter()
            .position(|b| *b == b'\'')
            .map_or(start, |end| start + 2 + end),
        (Some(_), Some(b'\'')) => start + 2,
        _ => start,
    }
}

/// The environment variables the `sources` read, by the rules in this module's documentation.
pub fn environment_reads(sources: &[(String, String)]) -> BTreeSet<String> {
    let constants = string_constants(sources);
    let mut found: BTreeSet<String> = constants
        .iter()
        .filter(|(name, _)| name.ends_with("_ENV") || name.ends_with("_VARIABLES"))
        .flat_map(|(_, values)| values.iter().cloned())
        .collect();
    for (_, text) in sources {
        let readers = readers(text);
        for argument in reader_arguments(text, &readers) {
            match argument {
                Argument::Literal(name) => {
                    found.insert(name);
                }
                Argument::Constant(name) => {
                    found.extend(constants.get(&name).into_iter().flatten().cloned());
                }
            }
        }
    }
    found.retain(|name| is_variable_name(name));
    found
}

fn is_variable_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_uppercase())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// `const NAME: &str = "…";` and `const NAME: [&str; N] = ["…", …];`, by name.
fn string_constants(sources: &[(String, String)]) -> BTreeMap<String, Vec<String>> {
    let mut constants = BTreeMap::new();
    for (_, text) in sources {
        for declaration in text.split("const ").skip(1) {
            let Some((name, rest)) = declaration.split_once(':') else {
                continue;
            };
            let name = name.trim();
            if !is_variable_name(name) {
                continue;
            }
            let Some((kind, value)) = rest.split_once('=') else {
                continue;
            };
            if !kind.contains("&str") {
                continue;
            }
            let value = value.split(';').next().unwrap_or_default();
            let literals = value.split('"').skip(1).step_by(2).map(str::to_string);
            constants.insert(name.to_string(), literals.collect());
        }
    }
    constants
}

/// The functions that read a variable in `text`: `var`, `var_os`, `env`, and closures defined
/// over one of them (`let set = |name: &str| env(name)…;`).
fn readers(text: &str) -> BTreeSet<String> {
    let mut readers: BTreeSet<String> = ["var", "var_os", "env"].map(String::from).into();
    loop {
        let before = readers.len();
        for binding in text.split("let ").skip(1) {
            let Some((name, rest)) = binding.split_once('=') else {
                continue;
            };
            let name = name.trim();
            let body = rest.split(';').next().unwrap_or_default().trim_start();
            let calls_reader = readers.iter().any(|r| calls(body, r));
            if body.starts_with('|') && calls_reader && is_identifier(name) {
                readers.insert(name.to_string());
            }
        }
        if readers.len() == before {
            return readers;
        }
    }
}

fn is_identifier(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `text` calls `function(` (not as part of a longer name, nor as the macro `env!`).
fn calls(text: &str, function: &str) -> bool {
    !call_sites(text, function).is_empty()
}

/// What follows each `function(` in `text`.
fn call_sites<'a>(text: &'a str, function: &str) -> Vec<&'a str> {
    let pattern = format!("{function}(");
    text.match_indices(&pattern)
        .filter(|(at, _)| {
            let before = text[..*at].chars().next_back();
            !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(|(at, _)| &text[at + pattern.len()..])
        .collect()
}

enum Argument {
    Literal(String),
    Constant(String),
}

/// The first argument of every call of a reader in `text`, when it is a literal or a constant.
fn reader_arguments(text: &str, readers: &BTreeSet<String>) -> Vec<Argument> {
    let mut arguments = Vec::new();
    for reader in readers {
        for after in call_sites(text, reader) {
            let after = after.trim_start();
            if let Some(literal) = after.strip_prefix('"') {
                let name = literal.split('"').next().unwrap_or_default();
                arguments.push(Argument::Literal(name.to_string()));
            } else {
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if is_variable_name(&name) {
                    arguments.push(Argument::Constant(name));
                }
            }
        }
    }
    arguments
}

/// The routes of the router's source: each path with the methods it answers (empty: any).
pub fn routes(router_source: &str) -> BTreeMap<String, BTreeSet<String>> {
    let text = without_test_items(router_source);
    let mut routes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for arm in text.split("(\"/").skip(1) {
        let Some((path, rest)) = arm.split_once('"') else {
            continue;
        };
        let pattern = rest.split(')').next().unwrap_or_default();
        let methods: BTreeSet<String> = pattern
            .split("Method::")
            .skip(1)
            .map(|m| m.chars().take_while(char::is_ascii_uppercase).collect())
            .collect();
        if !methods.is_empty() {
            routes
                .entry(format!("/{path}"))
                .or_default()
                .extend(methods);
        }
    }
    for guard in text.split("path == \"").skip(1) {
        let path = guard.split('"').next().unwrap_or_default();
        routes.insert(path.to_string(), BTreeSet::new());
    }
    routes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_texts_give_flags_variables_and_commands() {
        let help = "Commands:\n  create  Make one\n  help    Print\n\nOptions:\n      --store <URL>\n          x\n      --s3-region <REGION>\n          [env: S3_REGION]\n  -y, --yes  ok\n  -h, --help\n";
        assert_eq!(
            help_flags(help),
            ["--s3-region", "--store", "--yes"].map(String::from).into()
        );
        assert_eq!(help_env(help), ["S3_REGION".to_string()].into());
        assert_eq!(help_commands(help), ["create"]);
    }

    #[test]
    fn reads_in_every_shape_are_found_and_test_code_is_not() {
        let source = r#"
const SOCKET_ENV: &str = "A_SOCKET";
const LIST_VARIABLES: [&str; 2] = ["L_ONE", "L_TWO"];
const OTHER: &str = "VIA_CONSTANT";
fn f(env: &dyn Fn(&str) -> Option<String>) {
    let _ = std::env::var("DIRECT");
    let _ = env("THROUGH_PARAMETER");
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    let _ = set("THROUGH_CLOSURE");
    let _ = std::env::var_os(OTHER);
    let _ = env!("CARGO_PKG_VERSION");
    let _ = preset("NOT_READ");
    let _ = '{';
}
#[cfg(test)]
mod tests {
    fn g() { let _ = std::env::var("ONLY_IN_TESTS"); let _ = "}"; }
}
fn h() { let _ = std::env::var("AFTER_TESTS"); }
"#;
        let found = environment_reads(&[("x.rs".into(), without_test_items(source))]);
        let expected = [
            "AFTER_TESTS",
            "A_SOCKET",
            "DIRECT",
            "L_ONE",
            "L_TWO",
            "THROUGH_CLOSURE",
            "THROUGH_PARAMETER",
            "VIA_CONSTANT",
        ];
        assert_eq!(found, expected.map(String::from).into());
    }

    #[test]
    fn routes_are_paths_with_their_methods() {
        let router = r#"match (path, method) {
            ("/verify", Method::POST) => a,
            ("/verify", _) => b,
            ("/health", &Method::GET | &Method::HEAD) => c,
            (path, _) if path == "/auth" || path.starts_with("/auth/") => d,
        }"#;
        let routes = routes(router);
        assert_eq!(routes["/verify"], ["POST".to_string()].into());
        assert_eq!(routes["/health"], ["GET", "HEAD"].map(String::from).into());
        assert!(routes["/auth"].is_empty());
        assert_eq!(routes.len(), 3);
    }
}
