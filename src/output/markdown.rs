//! Rendering untrusted text (PR titles, commit messages, branch names) into markdown as data:
//! no markup, no HTML, no mentions, no table breaks.

/// Escapes `text` for inline use in GitHub/GitLab markdown, table cells included.
/// Newlines become spaces; `@` gets a zero-width joiner so it never mentions anyone; `$`
/// is escaped so no math renders; bidirectional controls, which could make the text read
/// differently from what it says, are dropped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '{' | '}' | '[' | ']' | '(' | ')' | '#' | '+' | '-' | '.'
            | '!' | '|' | '~' | '>' | '$' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '&' => out.push_str("&amp;"),
            '@' => out.push_str("@\u{2060}"),
            '\r' | '\n' | '\t' => out.push(' '),
            c if c.is_control() || is_bidi_control(c) => {}
            c => out.push(c),
        }
    }
    out
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A link whose text is untrusted; the URL is ours (built from the platform's variables)
/// but is still kept to http(s).
pub fn link(text: &str, url: Option<&str>) -> String {
    match url.filter(|u| u.starts_with("https://") || u.starts_with("http://")) {
        Some(url) => format!(
            "[{}]({})",
            escape(text),
            url.replace(')', "%29").replace(' ', "%20")
        ),
        None => escape(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_title_is_inert() {
        let s = escape("<script>alert(1)</script> | @org/team **bold** [x](http://evil)\nline");
        assert!(!s.contains("<script"));
        assert!(!s.contains("@org"));
        assert!(!s.contains(" | "));
        assert!(!s.contains('\n'));
        assert!(s.contains("\\*\\*bold\\*\\*"));
    }

    #[test]
    fn no_math_and_no_direction_tricks() {
        let s = escape("$\\huge{APPROVED}$ \u{202E}evil\u{202C}");
        assert!(!s.contains("$\\h"), "{s}");
        assert!(s.starts_with("\\$"), "{s}");
        assert!(!s.contains('\u{202E}') && !s.contains('\u{202C}'), "{s}");
    }
}
