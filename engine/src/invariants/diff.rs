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
    /// Its change is not shown as lines (`Binary files differ`, a binary patch): nothing in
    /// it can be judged.
    pub unreadable: bool,
    /// Its mode changes (`old mode`/`new mode`).
    pub mode_changed: bool,
}

/// A path as a diff header writes it: C-quoted by git when it holds a quote, a backslash or a
/// control character, with its `a/` or `b/` prefix taken off.
fn header_path(raw: &str) -> String {
    let unquoted = match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(quoted) => {
            let mut out: Vec<u8> = Vec::new();
            let mut bytes = quoted.bytes();
            while let Some(b) = bytes.next() {
                if b != b'\\' {
                    out.push(b);
                    continue;
                }
                match bytes.next() {
                    Some(b'n') => out.push(b'\n'),
                    Some(b't') => out.push(b'\t'),
                    Some(b'r') => out.push(b'\r'),
                    Some(d @ b'0'..=b'7') => {
                        // Three octal digits: one byte of a UTF-8 sequence.
                        let mut v = u32::from(d - b'0');
                        for _ in 0..2 {
                            if let Some(d @ b'0'..=b'7') = bytes.clone().next() {
                                bytes.next();
                                v = v * 8 + u32::from(d - b'0');
                            }
                        }
                        out.push(v as u8);
                    }
                    Some(other) => out.push(other),
                    None => {}
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        }
        None => raw.to_string(),
    };
    unquoted
        .strip_prefix("a/")
        .or_else(|| unquoted.strip_prefix("b/"))
        .map(str::to_string)
        .unwrap_or(unquoted)
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
            unreadable: false,
            mode_changed: false,
        })
    };
    for line in diff.lines() {
        if old_left > 0 || new_left > 0 {
            let Some(file) = files.last_mut() else {
                break;
            };
            if let Some(text) = line.strip_prefix('+') {
                file.added.push((new_line, text.to_string()));
                new_line = new_line.saturating_add(1);
                new_left = new_left.saturating_sub(1);
            } else if let Some(text) = line.strip_prefix('-') {
                file.removed.push((old_line, text.to_string()));
                old_line = old_line.saturating_add(1);
                old_left = old_left.saturating_sub(1);
            } else if line.starts_with(' ') || line.is_empty() {
                old_line = old_line.saturating_add(1);
                new_line = new_line.saturating_add(1);
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
            // `a/P b/P`, either half C-quoted. P may hold ` b/`: the `---`/`+++` lines that
            // follow name the file for sure; this is the name until they do.
            let path = match rest.strip_prefix('"') {
                Some(_) => rest
                    .split_once("\" ")
                    .map_or(rest.to_string(), |(a, _)| header_path(&format!("{a}\""))),
                None => rest.split_once(" b/").map_or(rest, |(_, b)| b).to_string(),
            };
            new_file(&mut files, &path);
            git_header = true;
            continue;
        }
        if let Some(from) = line.strip_prefix("--- ") {
            if !git_header {
                new_file(&mut files, &header_path(from));
            }
            git_header = false;
            if let Some(f) = files.last_mut() {
                if from == "/dev/null" {
                    f.status = Status::Added;
                } else {
                    f.path = header_path(from);
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
        } else if line.starts_with("old mode ") || line.starts_with("new mode ") {
            file.mode_changed = true;
        } else if line == "GIT binary patch"
            || (line.starts_with("Binary files ") && line.ends_with(" differ"))
        {
            file.unreadable = true;
        } else if let Some(p) = line.strip_prefix("+++ ") {
            file.path = header_path(p);
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

    #[test]
    fn quoted_paths_binary_files_and_modes() {
        let diff = concat!(
            "diff --git \"a/.github/workflows/x\\\"y.yml\" \"b/.github/workflows/x\\\"y.yml\"\n",
            "--- \"a/.github/workflows/x\\\"y.yml\"\n+++ \"b/.github/workflows/x\\\"y.yml\"\n@@ -1 +1 @@\n-a\n+b\n",
            "diff --git a/x b/y b/x b/y\ndeleted file mode 100644\n--- a/x b/y\n+++ /dev/null\n@@ -1 +0,0 @@\n-gone\n",
            "diff --git a/img.png b/img.png\n--- a/img.png\n+++ b/img.png\nBinary files differ\n",
            "diff --git a/run.sh b/run.sh\nold mode 100644\nnew mode 100755\n",
            "diff --git \"a/caf\\303\\251.txt\" \"b/caf\\303\\251.txt\"\n--- \"a/caf\\303\\251.txt\"\n+++ \"b/caf\\303\\251.txt\"\n@@ -1 +1 @@\n-a\n+b\n",
        );
        let files = parse(diff);
        assert_eq!(files.len(), 5, "{files:?}");
        assert_eq!(files[0].path, ".github/workflows/x\"y.yml");
        // A path holding ` b/`, deleted: named by its `---` line.
        assert_eq!(files[1].path, "x b/y");
        assert_eq!(files[1].status, Status::Deleted);
        assert!(files[2].unreadable);
        assert!(files[3].mode_changed);
        assert_eq!(files[4].path, "café.txt");
    }
}
