//! Removes insignificant whitespace from JSON text that is already known to be valid.
//!
//! Key files are written pretty-printed (indent 2); a key's metadata is kept in memory and sent on
//! every successful verify, so the key set stores it compactly. This module owns only that
//! whitespace removal; it does not validate (serde_json already did when the file was parsed).
//! It works on bytes: `"`, `\` and JSON whitespace are ASCII and never occur inside a multi-byte
//! UTF-8 sequence, so every cut it makes falls on a character boundary.

/// Appends `json` to `out` without the whitespace outside of strings.
pub fn minify_json_into(json: &str, out: &mut String) {
    let bytes = json.as_bytes();
    let mut in_string = false;
    let mut escaped = false;
    let mut run_start = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
        } else if byte == b'"' {
            in_string = true;
        } else if matches!(byte, b' ' | b'\n' | b'\r' | b'\t') {
            out.push_str(&json[run_start..at]);
            run_start = at + 1;
        }
    }
    out.push_str(&json[run_start..]);
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
    fn multibyte_text_survives() {
        let mut out = String::new();
        minify_json_into("{ \"名前\" : \"é \\\\\" , \"x\":\t\"😀\" }", &mut out);
        assert_eq!(out, "{\"名前\":\"é \\\\\",\"x\":\"😀\"}");
    }
}
