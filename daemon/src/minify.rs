//! Removes insignificant whitespace from JSON text that is already known to be valid.
//!
//! Key files are written pretty-printed (indent 2); a key's metadata is kept in memory and sent on
//! every successful verify, so the key set stores it compactly. This module owns only that
//! whitespace removal; it does not validate (serde_json already did when the file was parsed).
//! It works on bytes: `"`, `\` and JSON whitespace are ASCII and never occur inside a multi-byte
//! UTF-8 sequence, so every cut it makes falls on a character boundary.

/// Appends `json` to `out` without the whitespace outside of strings. Strings are skipped with
/// `memchr` and each run of whitespace costs one copy of the text before it, because a load
/// minifies the metadata of every key (a million, on a large host).
pub fn minify_json_into(json: &str, out: &mut String) {
    let bytes = json.as_bytes();
    let mut at = 0;
    let mut run_start = 0;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'"' => {
                at += 1;
                // To the closing quote, stepping over escaped characters.
                while let Some(offset) =
                    memchr::memchr2(b'"', b'\\', bytes.get(at..).unwrap_or_default())
                {
                    at += offset;
                    if bytes[at] == b'"' {
                        break;
                    }
                    at += 2;
                }
                at += 1;
            }
            b' ' | b'\n' | b'\r' | b'\t' => {
                out.push_str(json.get(run_start..at).unwrap_or_default());
                while let Some(b' ' | b'\n' | b'\r' | b'\t') = bytes.get(at) {
                    at += 1;
                }
                run_start = at;
            }
            _ => at += 1,
        }
    }
    out.push_str(json.get(run_start..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::minify_json_into;

    #[test]
    fn whitespace_inside_strings_is_kept() {
        let mut out = String::new();
        minify_json_into("{\n  \"a b\": \"c \\\" d\",\n  \"e\": [1, 2]\n}", &mut out);
        assert_eq!(out, r#"{"a b":"c \" d","e":[1,2]}"#);
        let reparsed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(reparsed["a b"], "c \" d");
    }

    #[test]
    fn unterminated_strings_and_trailing_escapes_do_not_panic() {
        for text in ["\"abc", "\"a\\", "\"a\\\"", "{ \"a\" :", "  ", "\\"] {
            let mut out = String::new();
            minify_json_into(text, &mut out);
            assert!(out.len() <= text.len());
        }
        let mut out = String::new();
        minify_json_into("[ \"a\\\\\" , \"\\\" x\" ]", &mut out);
        assert_eq!(out, "[\"a\\\\\",\"\\\" x\"]");
    }

    #[test]
    fn multibyte_text_survives() {
        let mut out = String::new();
        minify_json_into("{ \"名前\" : \"é \\\\\" , \"x\":\t\"😀\" }", &mut out);
        assert_eq!(out, "{\"名前\":\"é \\\\\",\"x\":\"😀\"}");
    }
}
