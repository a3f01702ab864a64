//! A git unified diff (as `ChangeSet::diff` writes it, or a model's answer after it was
//! applied) read into files and numbered lines. Written here rather than taken from a crate:
//! diffy and patch read one file's patch at a time, without git's `diff --git` headers that
//! say which files were added or deleted.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Added,
    Deleted,
    Modified,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDiff {
    pub path: String,
    pub status: Status,
    /// (line number in the new file, text) for added lines.
    pub added: Vec<(usize, String)>,
    /// (line number in the old file, text) for removed lines.
    pub removed: Vec<(usize, String)>,
}

/// The files of `diff`, in order. A file starts at `diff --git`, or at a `--- ` header
/// outside a hunk (a plain unified diff); a hunk ends when its header's line counts are used
/// up, so a content line that looks like a header is content. Text outside any file (a
/// preamble) is ignored.
pub fn parse(diff: &str) -> Vec<FileDiff> {
    let mut files: Vec<FileDiff> = Vec::new();
    let (mut old_line, mut new_line) = (0usize, 0usize);
    // Lines the current hunk still holds, on each side.
    let (mut old_left, mut new_left) = (0usize, 0usize);
    // The current file began at `diff --git` and has not had its `---` line yet.
    let mut git_header = false;
    let new_file = |files: &mut Vec<FileDiff>, path: &str| {
        files.push(FileDiff {
            path: path.to_string(),
            status: Status::Modified,
            added: Vec::new(),
            removed: Vec::new(),
        })
    };
    for line in diff.lines() {
        if old_left > 0 || new_left > 0 {
            let Some(file) = files.last_mut() else {
                break;
            };
            if let Some(text) = line.strip_prefix('+') {
                file.added.push((new_line, text.to_string()));
                new_line += 1;
                new_left = new_left.saturating_sub(1);
            } else if let Some(text) = line.strip_prefix('-') {
                file.removed.push((old_line, text.to_string()));
                old_line += 1;
                old_left = old_left.saturating_sub(1);
            } else if line.starts_with(' ') || line.is_empty() {
                old_line += 1;
                new_line += 1;
                old_left = old_left.saturating_sub(1);
                new_left = new_left.saturating_sub(1);
            } else if !line.starts_with('\\') {
                // A hunk cut short: what follows is headers again.
                (old_left, new_left) = (0, 0);
            } else {
                // `\ No newline at end of file` counts for neither side.
                continue;
            }
            if old_left > 0 || new_left > 0 || line.starts_with(['+', '-', ' ']) || line.is_empty()
            {
                continue;
            }
        }
        if let Some(rest) = line.strip_prefix("diff --git ") {
            // `a/P b/P`: P may hold spaces; both halves are the same path without renames
            // (ChangeSet writes none), and `+++ b/P` confirms it.
            let path = rest.split_once(" b/").map_or(rest, |(_, b)| b);
            new_file(&mut files, path);
            git_header = true;
            continue;
        }
        if let Some(from) = line.strip_prefix("--- ") {
            if !git_header {
                new_file(&mut files, from.strip_prefix("a/").unwrap_or(from));
            }
            git_header = false;
            if from == "/dev/null" {
                if let Some(f) = files.last_mut() {
                    f.status = Status::Added;
                }
            }
            continue;
        }
        let Some(file) = files.last_mut() else {
            continue;
        };
        if line.starts_with("new file mode") {
            file.status = Status::Added;
        } else if line.starts_with("deleted file mode") || line == "+++ /dev/null" {
            file.status = Status::Deleted;
        } else if let Some(p) = line.strip_prefix("+++ ") {
            file.path = p.strip_prefix("b/").unwrap_or(p).to_string();
        } else if let Some(header) = line.strip_prefix("@@ ") {
            // `@@ -a[,b] +c[,d] @@`: a count left out is 1.
            let mut parts = header.split_whitespace();
            let range = |p: Option<&str>, sign: char| -> (usize, usize) {
                let Some(p) = p.and_then(|p| p.strip_prefix(sign)) else {
                    return (0, 0);
                };
                let (start, count) = p.split_once(',').unwrap_or((p, "1"));
                (start.parse().unwrap_or(0), count.parse().unwrap_or(0))
            };
            (old_line, old_left) = range(parts.next(), '-');
            (new_line, new_left) = range(parts.next(), '+');
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_statuses_and_line_numbers() {
        let diff = "diff --git a/src/lib.rs b/src/lib.rs\n--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -10,3 +10,3 @@ fn f()\n ctx\n-old\n+new\n ctx\n\\ No newline at end of file\n\
diff --git a/tests/a b.py b/tests/a b.py\ndeleted file mode 100644\n--- a/tests/a b.py\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-def test_x():\n-    assert 1 == 1\n\
diff --git a/new.txt b/new.txt\nnew file mode 100644\n--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+--- not a header\n";
        let files = parse(diff);
        assert_eq!(files.len(), 3);
        assert_eq!(files[0].path, "src/lib.rs");
        assert_eq!(files[0].status, Status::Modified);
        assert_eq!(files[0].removed, vec![(11, "old".to_string())]);
        assert_eq!(files[0].added, vec![(11, "new".to_string())]);
        assert_eq!(files[1].path, "tests/a b.py");
        assert_eq!(files[1].status, Status::Deleted);
        assert_eq!(files[1].removed.len(), 2);
        assert_eq!(files[2].status, Status::Added);
        // A line of content that looks like a header is content inside a hunk.
        assert_eq!(files[2].added, vec![(1, "--- not a header".to_string())]);
    }

    #[test]
    fn a_plain_unified_diff_without_git_headers_is_read_too() {
        // Otherwise a diff written without `diff --git` would carry its changes past every
        // invariant unseen.
        let diff = "--- a/src/a.rs\n+++ b/src/a.rs\n@@ -1 +1 @@\n-a\n+b\n--- a/tests/old.rs\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-#[test]\n--- x\n";
        let files = parse(diff);
        assert_eq!(files.len(), 2, "{files:?}");
        assert_eq!(files[0].path, "src/a.rs");
        assert_eq!(files[0].added, vec![(1, "b".to_string())]);
        assert_eq!(files[1].path, "tests/old.rs");
        assert_eq!(files[1].status, Status::Deleted);
        // `--- x` is the hunk's second removed line, not a header.
        assert_eq!(
            files[1].removed,
            vec![(1, "#[test]".to_string()), (2, "-- x".to_string())]
        );
    }
}
