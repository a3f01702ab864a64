//! Text from outside (a log excerpt, a version a workflow asks for) placed in a PR's Markdown
//! stays text: it cannot close its block, mention anyone, or add links and images.

/// A fenced block around `text` whose fence is longer than any run of backticks in it (the
/// CommonMark rule for a fence that the content cannot close).
pub fn fenced(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    format!("{fence}\n{text}\n{fence}")
}

/// `text` on one line as HTML code: escaped, so no tag, link or mention is rendered.
pub fn code(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let escaped = one_line
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!("<code>{escaped}</code>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_excerpt_cannot_close_its_block() {
        let text = "error\n```\n@octocat ![x](https://evil.example/p.png)\n````";
        let block = fenced(text);
        assert!(block.starts_with("`````\n"), "{block}");
        assert!(block.ends_with("\n`````"), "{block}");
        assert_eq!(fenced("plain"), "```\nplain\n```");
    }

    #[test]
    fn a_hostile_note_is_inert_code() {
        assert_eq!(
            code("3.12</code><img src=x>\n@octocat & co"),
            "<code>3.12&lt;/code&gt;&lt;img src=x&gt; @octocat &amp; co</code>"
        );
    }
}
