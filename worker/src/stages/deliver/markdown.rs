//! Text from outside (a log excerpt, a command or version from a workflow, a file name from a
//! log) placed in a PR's Markdown stays text: it cannot close its block or span, mention
//! anyone, or add links, images or HTML.

/// A fenced block around `text` whose fence is longer than any run of backticks in it (the
/// CommonMark rule for a fence that the content cannot close).
pub fn fenced(text: &str) -> String {
    fenced_as(text, "")
}

/// [`fenced`], the block marked as `language` (e.g. `diff`) for highlighting.
pub fn fenced_as(text: &str, language: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    format!("{fence}{language}\n{text}\n{fence}")
}

/// `text` on one line as a code span: in CommonMark nothing inside one is Markdown or HTML,
/// and its delimiter (a run of backticks longer than any in the text, with a space inside
/// each end) cannot be closed by the text. (Raw `<code>` would not do: Markdown inside it
/// is still rendered, links and images included.)
pub fn code(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let longest = one_line
        .split(|c| c != '`')
        .map(str::len)
        .max()
        .unwrap_or(0);
    let ticks = "`".repeat(longest + 1);
    format!("{ticks} {one_line} {ticks}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What GitHub would render, by a CommonMark renderer.
    fn rendered(markdown: &str) -> String {
        let mut html = String::new();
        pulldown_cmark::html::push_html(&mut html, pulldown_cmark::Parser::new(markdown));
        html
    }

    const HOSTILE: &str = "x ``` `` ` ![x](https://evil.example/p.png) [click](https://evil.example) <img src=x> **b**";

    #[test]
    fn rendered_hostile_text_has_no_link_image_or_markup() {
        for md in [
            format!("before {} after", code(HOSTILE)),
            format!(
                "before\n\n{}\n\nafter",
                fenced(&format!("{HOSTILE}\n```\n{HOSTILE}"))
            ),
        ] {
            let html = rendered(&md);
            for tag in ["<a ", "<img", "<strong>", "<em>"] {
                assert!(!html.contains(tag), "{tag} in {html}");
            }
            assert!(html.contains("after"), "{html}");
        }
        // Raw <code> would not have done: Markdown inside it is rendered.
        assert!(rendered("<code>![x](https://evil.example/p.png)</code>").contains("<img"));
    }

    #[test]
    fn a_hostile_excerpt_cannot_close_its_block() {
        let text = "error\n```\n@octocat ![x](https://evil.example/p.png)\n````";
        let block = fenced(text);
        assert!(block.starts_with("`````\n"), "{block}");
        assert!(block.ends_with("\n`````"), "{block}");
        assert_eq!(fenced("plain"), "```\nplain\n```");
    }

    #[test]
    fn a_hostile_note_is_an_inert_code_span() {
        assert_eq!(code("cargo fmt --check"), "` cargo fmt --check `");
        // Backticks in the text: the delimiter is longer, so the text cannot close it.
        assert_eq!(code("a `b` ``c``"), "``` a `b` ``c`` ```");
        // Links, images, HTML, mentions and new lines stay text inside the span.
        assert_eq!(
            code("![x](https://evil.example/p.png)\n[click](https://evil.example) <img src=x> @octocat"),
            "` ![x](https://evil.example/p.png) [click](https://evil.example) <img src=x> @octocat `"
        );
    }
}
