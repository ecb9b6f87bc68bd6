//! Actor keys: arrays of strings, which the manager API carries as one escaped string.
//!
//! The format (RIVETKIT_PROTOCOL.md §4): `[]` is `/`; otherwise the parts are joined with `/`,
//! each part escaped with `\` → `\\` and `/` → `\/`, and an empty part is written `\0`.
//! [`serialize`] of a parsed key gives back the canonical string, which is what actor ids hash.

/// Upper bound on the serialized key string we accept, in bytes.
pub const KEY_BYTES_MAX: usize = 4096;
/// Upper bound on the number of parts in a key.
pub const KEY_PARTS_MAX: usize = 64;

/// Why a key string was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyError {
    TooLong,
    TooManyParts,
    /// A `\` followed by something other than `\`, `/` or a lone `0` part.
    BadEscape,
}

/// Parses the serialized key string into its parts.
pub fn parse(text: &str) -> Result<Vec<String>, KeyError> {
    if text.len() > KEY_BYTES_MAX {
        return Err(KeyError::TooLong);
    }
    if text == "/" {
        return Ok(Vec::new());
    }
    let mut parts = Vec::new();
    let mut part = String::new();
    // `\0` means "empty part" only when it is the whole part.
    let mut part_is_empty_marker = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('\\') => part.push('\\'),
                Some('/') => part.push('/'),
                Some('0') if part.is_empty() && !part_is_empty_marker => {
                    part_is_empty_marker = true
                }
                _ => return Err(KeyError::BadEscape),
            },
            '/' => {
                parts.push(std::mem::take(&mut part));
                part_is_empty_marker = false;
                if parts.len() >= KEY_PARTS_MAX {
                    return Err(KeyError::TooManyParts);
                }
            }
            c => {
                if part_is_empty_marker {
                    return Err(KeyError::BadEscape);
                }
                part.push(c);
            }
        }
    }
    parts.push(part);
    Ok(parts)
}

/// Writes `parts` in the serialized form, appending to `out`.
pub fn serialize_into(parts: &[String], out: &mut String) {
    if parts.is_empty() {
        out.push('/');
        return;
    }
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        if part.is_empty() {
            out.push_str("\\0");
            continue;
        }
        for c in part.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '/' => out.push_str("\\/"),
                c => out.push(c),
            }
        }
    }
}

/// The serialized form of `parts`.
pub fn serialize(parts: &[String]) -> String {
    let mut out = String::new();
    serialize_into(parts, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn table() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "/"),
            (&["a"], "a"),
            (&["json", "a/b"], "json/a\\/b"),
            (&["a", "b\\c"], "a/b\\\\c"),
            (&["", "x", ""], "\\0/x/\\0"),
            (&[""], "\\0"),
            (&["/"], "\\/"),
            (&["ünï", "😀"], "ünï/😀"),
            (&["0"], "0"),
            (&["\\0"], "\\\\0"),
        ];
        for (list, text) in cases {
            assert_eq!(serialize(&parts(list)), *text, "serialize {list:?}");
            assert_eq!(parse(text), Ok(parts(list)), "parse {text:?}");
        }
    }

    #[test]
    fn rejects() {
        assert_eq!(parse("a\\x"), Err(KeyError::BadEscape));
        assert_eq!(parse("a\\"), Err(KeyError::BadEscape));
        assert_eq!(parse("\\0x"), Err(KeyError::BadEscape));
        assert_eq!(parse("\\0\\0"), Err(KeyError::BadEscape));
        assert_eq!(
            parse(&"a".repeat(KEY_BYTES_MAX + 1)),
            Err(KeyError::TooLong)
        );
        assert_eq!(
            parse(&"/".repeat(KEY_PARTS_MAX + 1)),
            Err(KeyError::TooManyParts)
        );
    }

    #[test]
    fn empty_string_is_one_empty_part() {
        // The client never sends it (it writes `\0`), but it must not be confused with `[]`.
        assert_eq!(parse(""), Ok(parts(&[""])));
    }
}
