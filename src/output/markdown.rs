//! Rendering untrusted text (PR titles, commit messages, branch names) into markdown as data:
//! no markup, no HTML, no mentions, no table breaks.

/// Escapes `text` for inline use in GitHub/GitLab markdown, table cells included.
/// Newlines become spaces; `@` gets a zero-width joiner so it never mentions anyone.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '{' | '}' | '[' | ']' | '(' | ')' | '#' | '+' | '-' | '.'
            | '!' | '|' | '~' | '>' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '&' => out.push_str("&amp;"),
            '@' => out.push_str("@\u{2060}"),
            '\r' | '\n' | '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
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
}
