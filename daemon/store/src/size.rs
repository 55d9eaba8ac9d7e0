//! Human sizes for the command line: `1GiB`, `64MiB`, `512KiB`, `100B`, or a bare number of
//! bytes. Only the binary units: `1GB` is refused rather than guessed at.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a size (use e.g. 1GiB, 64MiB, 512KiB, or a number of bytes)")]
pub struct SizeError(pub String);

/// Parses a human size into bytes.
pub fn parse(text: &str) -> Result<u64, SizeError> {
    let text = text.trim();
    let error = || SizeError(text.chars().take(40).collect());
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| error())?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "kib" => 10,
        "mib" => 20,
        "gib" => 30,
        "tib" => 40,
        _ => return Err(error()),
    };
    number.checked_mul(1 << shift).ok_or_else(error)
}

/// `bytes` the way [`parse`] reads it: the largest binary unit that divides it exactly.
pub fn format(bytes: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes != 0 && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("1GiB"), Ok(1 << 30));
        assert_eq!(parse("64MiB"), Ok(64 << 20));
        assert_eq!(parse("64 mib"), Ok(64 << 20));
        assert_eq!(parse("512KiB"), Ok(512 << 10));
        assert_eq!(parse("100B"), Ok(100));
        assert_eq!(parse("12345"), Ok(12345));
        for bad in [
            "",
            "GiB",
            "1GB",
            "1.5GiB",
            "-1",
            "1 parsec",
            "99999999999TiB",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_back_to_what_parses() {
        for bytes in [0, 1, 1000, 1024, 64 << 20, 1 << 30, 3 << 40, (1 << 30) + 1] {
            assert_eq!(parse(&format(bytes)), Ok(bytes), "{}", format(bytes));
        }
        assert_eq!(format(1 << 30), "1GiB");
        assert_eq!(format(1536), "1536B");
    }
}
