//! Removes insignificant whitespace from JSON text that is already known to be valid.
//!
//! Key files are written pretty-printed (indent 2); a key's metadata is kept in memory and sent on
//! every successful verify, so the key set stores it compactly. This module owns only that
//! whitespace removal; it does not validate (serde_json already did when the file was parsed).

/// Appends `json` to `out` without the whitespace outside of strings.
pub fn minify_json_into(json: &str, out: &mut String) {
    let mut in_string = false;
    let mut escaped = false;
    for ch in json.chars() {
        if in_string {
            out.push(ch);
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_string = false;
            }
        } else if ch == '"' {
            in_string = true;
            out.push(ch);
        } else if !matches!(ch, ' ' | '\n' | '\r' | '\t') {
            out.push(ch);
        }
    }
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
}
