//! Work items referenced in commit messages, titles and branch names.

use std::collections::BTreeSet;
use std::sync::LazyLock;

// regex-lite: these three patterns need no Unicode classes, and `\b`/`\d` matching ASCII
// only is what a record number or an issue key is made of.
use regex_lite::Regex;

static PATTERNS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        // ServiceNow-style records: INC0012345, CHG0030001, PRB0000123, RITM0010001.
        r"\b(?:INC|CHG|PRB|RITM|REQ|TASK)\d{7}\b",
        // Jira-style keys: ABC-123.
        r"\b[A-Z][A-Z0-9]{1,9}-[1-9]\d{0,6}\b",
        // Issue numbers: #123.
        r"(?:^|[\s(\[,;])#([1-9]\d{0,6})\b",
    ]
    .iter()
    .filter_map(|p| Regex::new(p).ok())
    .collect()
});

/// Prefixes that look like Jira keys but name standards and encodings.
const NOT_KEYS: &[&str] = &["UTF", "ISO", "RFC", "SHA", "AES", "TLS", "HTTP", "X"];

/// The distinct work items in `texts`, sorted.
pub fn extract<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut found = BTreeSet::new();
    for text in texts {
        for (i, re) in PATTERNS.iter().enumerate() {
            for caps in re.captures_iter(text) {
                let item = match (i, caps.get(1)) {
                    (2, Some(n)) => format!("#{}", n.as_str()),
                    _ => caps
                        .get(0)
                        .map(|m| m.as_str().to_string())
                        .unwrap_or_default(),
                };
                let prefix = item.split('-').next().unwrap_or("");
                if i == 1 && NOT_KEYS.contains(&prefix) {
                    continue;
                }
                if !item.is_empty() {
                    found.insert(item);
                }
            }
        }
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_style_once() {
        let items = extract([
            "PAY-42: fix rounding (#17)",
            "Refs INC0012345 and PAY-42; UTF-8 is not a key",
            "feature/OPS-7-cache",
            "issue#3 is not a reference but (#8) is",
        ]);
        assert_eq!(items, vec!["#17", "#8", "INC0012345", "OPS-7", "PAY-42"]);
    }

    #[test]
    fn table() {
        let cases: &[(&str, &[&str])] = &[
            (
                "INC0012345 CHG0030001 PRB0000123 RITM0010001",
                &["CHG0030001", "INC0012345", "PRB0000123", "RITM0010001"],
            ),
            ("INC001234 is too short, inc0012345 is lower case", &[]),
            ("ABC-123 and AB2-9", &["AB2-9", "ABC-123"]),
            ("abc-123, A-1, ABC-0, ABC-01, ABCDEFGHIJK-1", &[]),
            ("UTF-8 ISO-8601 SHA-256 RFC-2119 TLS-13 HTTP-2 AES-128", &[]),
            ("PAY-42PAY is not a key but PAY-42. is", &["PAY-42"]),
            ("#123 at the start", &["#123"]),
            ("fix (#12), see #5. [#9];#8", &["#12", "#5", "#8", "#9"]),
            ("a#5 PR#3 C# #0 #01", &[]),
            ("feature/OPS-7-cache", &["OPS-7"]),
            // Digits are ASCII digits: other scripts' digits make no key or number.
            (
                "PAY-\u{664}\u{662} #\u{664} INC\u{664}\u{664}\u{664}\u{664}\u{664}\u{664}\u{664}",
                &[],
            ),
            ("Prüfung: PAY-42 — «#7»", &["PAY-42"]),
        ];
        for (text, want) in cases {
            assert_eq!(extract([*text]), *want, "{text}");
        }
    }

    #[test]
    fn distinct_across_texts_and_sorted() {
        let items = extract(["OPS-7 (#2)", "OPS-7 again, INC0000001", "#2"]);
        assert_eq!(items, ["#2", "INC0000001", "OPS-7"]);
        assert!(extract(Vec::<&str>::new()).is_empty());
    }
}
