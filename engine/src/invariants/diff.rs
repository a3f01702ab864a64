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

/// The files of `diff`, in order. Text outside any file (a preamble) is ignored; a hunk line
/// before any hunk header is not counted.
pub fn parse(diff: &str) -> Vec<FileDiff> {
    let mut files: Vec<FileDiff> = Vec::new();
    let (mut old_line, mut new_line, mut in_hunk) = (0usize, 0usize, false);
    for line in diff.lines() {
        if let Some(rest) = line.strip_prefix("diff --git ") {
            // `a/P b/P`: P may hold spaces, and both halves are the same path for a diff
            // without renames (ChangeSet writes none).
            let path = rest.split_once(" b/").map_or(rest, |(_, b)| b).to_string();
            files.push(FileDiff {
                path,
                status: Status::Modified,
                added: Vec::new(),
                removed: Vec::new(),
            });
            in_hunk = false;
            continue;
        }
        let Some(file) = files.last_mut() else {
            continue;
        };
        if !in_hunk {
            if line.starts_with("new file mode") || line == "--- /dev/null" {
                file.status = Status::Added;
            } else if line.starts_with("deleted file mode") || line == "+++ /dev/null" {
                file.status = Status::Deleted;
            } else if let Some(p) = line.strip_prefix("+++ b/") {
                file.path = p.to_string();
            }
        }
        if let Some(header) = line.strip_prefix("@@ ") {
            // `@@ -a,b +c,d @@`
            let mut parts = header.split_whitespace();
            let start = |p: Option<&str>, sign: char| {
                p.and_then(|p| p.strip_prefix(sign))
                    .and_then(|p| p.split(',').next())
                    .and_then(|n| n.parse::<usize>().ok())
            };
            old_line = start(parts.next(), '-').unwrap_or(0);
            new_line = start(parts.next(), '+').unwrap_or(0);
            in_hunk = true;
            continue;
        }
        if !in_hunk {
            continue;
        }
        if let Some(text) = line.strip_prefix('+') {
            file.added.push((new_line, text.to_string()));
            new_line += 1;
        } else if let Some(text) = line.strip_prefix('-') {
            file.removed.push((old_line, text.to_string()));
            old_line += 1;
        } else if line.starts_with(' ') || line.is_empty() {
            old_line += 1;
            new_line += 1;
        }
        // `\ No newline at end of file` counts for neither side.
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
}
