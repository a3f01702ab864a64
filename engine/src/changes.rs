//! A fix as file contents, not as diff text.
//!
//! The sandbox ran the repository's own code (its formatter, its build scripts, a `black.py`
//! that shadows black), so anything it says is hostile: a diff it prints can name
//! `../../etc/passwd`, an absolute path or a symlink, and a `diff.external` in its git config
//! can make `git diff` print whatever it likes. So selfheal never takes the sandbox's diff:
//! the sandbox hands back the changed files themselves (a tar of regular files plus a list of
//! deleted paths), the host checks every path and entry type, compares each file with the
//! original it downloaded itself, and keeps the result as a [`ChangeSet`]. The change set is
//! what validation lays over the checkout, what the policy and the guard judge (through the
//! diff the host renders from it), and what delivery commits: one artifact, so what is
//! delivered is by construction what was validated.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// At most this many files in one change: formatters touch many, but not the whole world.
pub const MAX_FILES: usize = 2_000;
/// At most this many bytes in one changed file.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// At most this many bytes brought back from the sandbox for one change.
pub const MAX_CAPTURE_BYTES: usize = 64 * 1024 * 1024;
/// At most this many lines on either side of a changed file: the diff is rendered here (its
/// cost grows with lines times differences), and nobody reviews a bigger one anyway.
pub const MAX_FILE_LINES: usize = 20_000;

/// The shell that, run in the sandbox after a strategy, writes what changed to
/// `/work/changes.tar`: `deleted.list` (NUL-separated paths) and `files/<path>` for every
/// added or modified path. The global and system git config are ignored, but the
/// repository's code ran before this and may have changed `.git/config`: git's answer is only
/// a hint, and the host checks everything it brings back.
pub const CAPTURE: &str = r#"
cd /work/repo || exit 90
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
git add -A >/dev/null 2>&1
git diff --cached --no-ext-diff --no-renames --name-only -z --diff-filter=D HEAD > /work/deleted.list || exit 91
git diff --cached --no-ext-diff --no-renames --name-only -z --diff-filter=d HEAD > /work/changed.list || exit 91
tar -C /work -cf /work/changes.tar deleted.list || exit 92
if [ -s /work/changed.list ]; then
  tar -C /work/repo --null --verbatim-files-from --no-recursion --transform 's,^,files/,' -T /work/changed.list -rf /work/changes.tar || exit 92
fi
"#;

/// Why a change the sandbox produced is refused. Nothing of it is delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the change names an unsafe path {path:?}: {why}")]
    UnsafePath { path: String, why: &'static str },
    #[error("the change makes {path} a {kind}, not a regular file")]
    NotAFile { path: String, kind: &'static str },
    #[error("the change makes {0} binary: selfheal delivers text changes only")]
    Binary(String),
    #[error("the change holds both {0} and a path inside it")]
    Conflict(String),
    #[error("the change is too large: {0}")]
    TooLarge(String),
    #[error("the sandbox's account of the change is unreadable: {0}")]
    Unreadable(String),
    #[error("the strategy changed nothing")]
    Empty,
}

/// A path inside the repository: relative, normal components only, not in `.git`.
pub fn check_path(path: &str) -> Result<&str, Refused> {
    let unsafe_path = |why| Refused::UnsafePath {
        path: path.chars().take(200).collect(),
        why,
    };
    if path.is_empty() {
        return Err(unsafe_path("empty"));
    }
    if path.len() > 4096 || path.contains('\\') || path.chars().any(char::is_control) {
        return Err(unsafe_path(
            "too long, or holds a backslash or a control character",
        ));
    }
    if path.starts_with('/') {
        return Err(unsafe_path("absolute"));
    }
    // One spelling per path: `a//b`, `a/./b` and `a/` would name `a/b` and `a` twice over.
    for part in path.split('/') {
        match part {
            ".." => return Err(unsafe_path("climbs out with ..")),
            "" | "." => return Err(unsafe_path("not a plain relative path")),
            ".git" => return Err(unsafe_path("inside .git")),
            _ => {}
        }
    }
    Ok(path)
}

/// One file's new state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChange {
    pub path: String,
    /// The new content; `None` when the file is deleted.
    #[serde(with = "base64_content")]
    pub content: Option<Vec<u8>>,
    pub executable: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeSet {
    /// Sorted by path, one entry per path.
    pub files: Vec<FileChange>,
}

impl ChangeSet {
    /// The change described by the sandbox's `changes.tar`, checked entry by entry and kept
    /// only where it differs from the checkout at `original`.
    pub fn from_capture(archive: &[u8], original: &Path) -> Result<ChangeSet, Refused> {
        if archive.len() > MAX_CAPTURE_BYTES {
            return Err(Refused::TooLarge(format!(
                "{} bytes of changed files",
                archive.len()
            )));
        }
        let unreadable = |e: std::io::Error| Refused::Unreadable(e.to_string());
        let mut files: BTreeMap<String, FileChange> = BTreeMap::new();
        let mut deleted: Vec<String> = Vec::new();
        let mut tar = tar::Archive::new(archive);
        for entry in tar.entries().map_err(unreadable)? {
            let mut entry = entry.map_err(unreadable)?;
            let raw = entry.path_bytes().into_owned();
            let name = String::from_utf8(raw)
                .map_err(|_| Refused::Unreadable("a path that is not UTF-8".into()))?;
            if name == "deleted.list" {
                let mut list = Vec::new();
                entry
                    .by_ref()
                    .take(MAX_CAPTURE_BYTES as u64)
                    .read_to_end(&mut list)
                    .map_err(unreadable)?;
                for path in list.split(|b| *b == 0).filter(|p| !p.is_empty()) {
                    let path = String::from_utf8(path.to_vec())
                        .map_err(|_| Refused::Unreadable("a path that is not UTF-8".into()))?;
                    check_path(&path)?;
                    deleted.push(path);
                }
                continue;
            }
            let Some(path) = name.strip_prefix("files/") else {
                return Err(Refused::Unreadable(format!("unexpected entry {name:?}")));
            };
            let kind = entry.header().entry_type();
            if kind.is_dir() {
                continue;
            }
            let path = check_path(path)?.to_string();
            if !(kind.is_file() || kind == tar::EntryType::Continuous) {
                let kind = if kind.is_symlink() {
                    "symlink"
                } else if kind.is_hard_link() {
                    "hard link"
                } else {
                    "special file"
                };
                return Err(Refused::NotAFile { path, kind });
            }
            if entry.size() > MAX_FILE_BYTES {
                return Err(Refused::TooLarge(format!(
                    "{path} is {} bytes (at most {MAX_FILE_BYTES})",
                    entry.size()
                )));
            }
            let executable = entry.header().mode().map_err(unreadable)? & 0o111 != 0;
            let mut content = Vec::with_capacity(entry.size() as usize);
            entry
                .by_ref()
                .take(MAX_FILE_BYTES)
                .read_to_end(&mut content)
                .map_err(unreadable)?;
            // As git judges it: a NUL early on makes a file binary, UTF-8 or not.
            if content.iter().take(8000).any(|b| *b == 0) {
                return Err(Refused::Binary(path));
            }
            match std::str::from_utf8(&content) {
                Err(_) => return Err(Refused::Binary(path)),
                Ok(text) if text.lines().count() > MAX_FILE_LINES => {
                    return Err(Refused::TooLarge(format!(
                        "{path} has over {MAX_FILE_LINES} lines"
                    )))
                }
                Ok(_) => {}
            }
            files.insert(
                path.clone(),
                FileChange {
                    path,
                    content: Some(content),
                    executable,
                },
            );
        }
        for path in deleted {
            files.insert(
                path.clone(),
                FileChange {
                    path,
                    content: None,
                    executable: false,
                },
            );
        }
        if files.len() > MAX_FILES {
            return Err(Refused::TooLarge(format!(
                "{} files (at most {MAX_FILES})",
                files.len()
            )));
        }
        // A file and a path inside it cannot both be: the tree would be ambiguous.
        for path in files.keys() {
            let mut at = path.as_str();
            while let Some((parent, _)) = at.rsplit_once('/') {
                if files.get(parent).is_some_and(|f| f.content.is_some()) {
                    return Err(Refused::Conflict(parent.to_string()));
                }
                at = parent;
            }
        }
        let mut set = ChangeSet::default();
        for (path, change) in files {
            let before = read_original(original, &path)?;
            let same = match (&before, &change.content) {
                (None, None) => true,
                (Some((old, old_exec)), Some(new)) => old == new && *old_exec == change.executable,
                _ => false,
            };
            if !same {
                set.files.push(change);
            }
        }
        if set.files.is_empty() {
            return Err(Refused::Empty);
        }
        Ok(set)
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Paths this change touches, in order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.iter().map(|f| f.path.as_str())
    }

    /// The change as a git-style unified diff, rendered here from the original checkout and
    /// the new contents (never taken from the sandbox): what people read in the PR and what
    /// the guard and the merge policy judge.
    pub fn diff(&self, original: &Path) -> Result<String, Refused> {
        let mut out = String::new();
        for change in &self.files {
            let path = &change.path;
            let before = read_original(original, path)?;
            let old_mode = before.as_ref().map(|(_, x)| mode(*x));
            let new_mode = change.content.as_ref().map(|_| mode(change.executable));
            out.push_str(&format!("diff --git a/{path} b/{path}\n"));
            match (old_mode, new_mode) {
                (None, Some(m)) => out.push_str(&format!("new file mode {m}\n")),
                (Some(m), None) => out.push_str(&format!("deleted file mode {m}\n")),
                (Some(a), Some(b)) if a != b => {
                    out.push_str(&format!("old mode {a}\nnew mode {b}\n"))
                }
                _ => {}
            }
            let old = before.as_ref().map(|(c, _)| c.as_slice());
            let new = change.content.as_deref();
            let from = if old.is_some() {
                format!("a/{path}")
            } else {
                "/dev/null".into()
            };
            let to = if new.is_some() {
                format!("b/{path}")
            } else {
                "/dev/null".into()
            };
            // Every changed path gets its `---`/`+++` lines, even with no hunk (an empty file
            // added or removed, a mode change): that is what path checks and the guard read.
            let (old_text, new_text) = match (
                std::str::from_utf8(old.unwrap_or_default()),
                std::str::from_utf8(new.unwrap_or_default()),
            ) {
                (Ok(a), Ok(b)) if a.lines().count() <= MAX_FILE_LINES => (a, b),
                // A binary (or huge) original that the change deletes or replaces.
                _ => {
                    out.push_str(&format!("--- {from}\n+++ {to}\nBinary files differ\n"));
                    continue;
                }
            };
            if old_text == new_text {
                out.push_str(&format!("--- {from}\n+++ {to}\n"));
                continue;
            }
            let patch = diffy::DiffOptions::new()
                .set_original_filename(from)
                .set_modified_filename(to)
                .create_patch(old_text, new_text);
            out.push_str(&patch.to_string());
        }
        Ok(out)
    }

    /// Writes the change into a checkout on this machine (`selfheal heal --apply`). Refuses a
    /// path that goes through a symlink, so the change lands inside `root` or nowhere.
    pub fn write_to(&self, root: &Path) -> Result<(), Refused> {
        let io = |e: std::io::Error| Refused::Unreadable(e.to_string());
        for change in &self.files {
            let path = check_path(&change.path)?;
            let target = no_symlinks(root, path)?;
            match &change.content {
                None => match std::fs::remove_file(&target) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
                    _ => {}
                },
                Some(content) => {
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent).map_err(io)?;
                    }
                    std::fs::write(&target, content).map_err(io)?;
                    use std::os::unix::fs::PermissionsExt;
                    let m = if change.executable { 0o755 } else { 0o644 };
                    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(m))
                        .map_err(io)?;
                }
            }
        }
        Ok(())
    }
}

fn mode(executable: bool) -> &'static str {
    if executable {
        "100755"
    } else {
        "100644"
    }
}

/// What stands in the way of `root/rel` on this machine, if anything.
pub enum Obstacle {
    /// The path itself, or a directory on the way, is a symlink.
    Symlink,
    /// A directory on the way is a file (relative to `root`).
    File(PathBuf),
}

/// Walks `root/rel` without following anything: whether a symlink, or a file where a
/// directory is needed, lies on the way. Writing or reading `root/rel` is safe only when
/// there is none (used for checkouts, change sets and `heal --apply` alike).
pub fn obstacle(root: &Path, rel: &Path) -> Option<Obstacle> {
    let mut at = root.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => return Some(Obstacle::Symlink),
            Ok(meta) if i + 1 < parts.len() && !meta.is_dir() => {
                return Some(Obstacle::File(
                    at.strip_prefix(root).unwrap_or(&at).to_path_buf(),
                ))
            }
            _ => {}
        }
    }
    None
}

/// `root/path`, provided nothing on the way is a symlink or a file (a checkout unpacked by
/// selfheal holds no link out of it; a local one may).
fn no_symlinks(root: &Path, path: &str) -> Result<PathBuf, Refused> {
    match obstacle(root, Path::new(path)) {
        None => Ok(root.join(path)),
        Some(Obstacle::Symlink) => Err(Refused::NotAFile {
            path: path.to_string(),
            kind: "path through a symlink",
        }),
        Some(Obstacle::File(file)) => Err(Refused::Conflict(file.display().to_string())),
    }
}

/// The original file's content and executable bit, or `None` when it does not exist.
fn read_original(root: &Path, path: &str) -> Result<Option<(Vec<u8>, bool)>, Refused> {
    let target = no_symlinks(root, check_path(path)?)?;
    let meta = match std::fs::symlink_metadata(&target) {
        Ok(meta) => meta,
        Err(_) => return Ok(None),
    };
    if !meta.is_file() {
        return Err(Refused::NotAFile {
            path: path.to_string(),
            kind: "directory or special file in the original",
        });
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(Refused::TooLarge(format!("{path} is {} bytes", meta.len())));
    }
    use std::os::unix::fs::PermissionsExt;
    let content = std::fs::read(&target).map_err(|e| Refused::Unreadable(e.to_string()))?;
    // A change to a file too long to show in a diff is a change nobody can judge.
    if String::from_utf8_lossy(&content).lines().count() > MAX_FILE_LINES {
        return Err(Refused::TooLarge(format!(
            "{path} has over {MAX_FILE_LINES} lines"
        )));
    }
    Ok(Some((content, meta.permissions().mode() & 0o111 != 0)))
}

mod base64_content {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => {
                s.serialize_some(&base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| {
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(serde::de::Error::custom)
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(entries: &[(&str, tar::EntryType, &[u8])], deleted: &[&str]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let list = deleted.join("\0");
        let mut h = tar::Header::new_gnu();
        h.set_size(list.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "deleted.list", list.as_bytes())
            .unwrap();
        for (name, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(if kind.is_file() { data.len() as u64 } else { 0 });
            h.set_mode(0o644);
            if kind.is_symlink() || kind.is_hard_link() {
                h.set_link_name(std::str::from_utf8(data).unwrap()).unwrap();
            }
            // Set the raw name: tar's own setter refuses `..`, a hostile sandbox does not.
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            let body: &[u8] = if kind.is_file() { data } else { &[] };
            b.append(&h, body).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/lib.rs"), "fn a(){}\n").unwrap();
        std::fs::write(dir.path().join("README"), "hi\n").unwrap();
        dir
    }

    #[test]
    fn keeps_real_changes_and_renders_the_diff_itself() {
        let dir = repo();
        let tar = capture(
            &[
                ("files/src/lib.rs", tar::EntryType::Regular, b"fn a() {}\n"),
                ("files/README", tar::EntryType::Regular, b"hi\n"),
                ("files/src/new.rs", tar::EntryType::Regular, b"// new\n"),
            ],
            &["gone.txt"],
        );
        let set = ChangeSet::from_capture(&tar, dir.path()).unwrap();
        // README is unchanged and gone.txt never existed: neither is a change.
        assert_eq!(
            set.paths().collect::<Vec<_>>(),
            ["src/lib.rs", "src/new.rs"]
        );
        let diff = set.diff(dir.path()).unwrap();
        assert!(
            diff.contains(
                "diff --git a/src/lib.rs b/src/lib.rs\n--- a/src/lib.rs\n+++ b/src/lib.rs\n"
            ),
            "{diff}"
        );
        assert!(diff.contains("-fn a(){}\n+fn a() {}\n"), "{diff}");
        assert!(
            diff.contains("new file mode 100644\n--- /dev/null\n+++ b/src/new.rs"),
            "{diff}"
        );
        let json = serde_json::to_value(&set).unwrap();
        assert_eq!(serde_json::from_value::<ChangeSet>(json).unwrap(), set);
    }

    #[test]
    fn refuses_paths_outside_the_repository_links_and_empty_changes() {
        let dir = repo();
        for (name, kind, data, want) in [
            (
                "files/../../etc/passwd",
                tar::EntryType::Regular,
                &b"x"[..],
                "climbs out",
            ),
            (
                "files//etc/passwd",
                tar::EntryType::Regular,
                b"x",
                "absolute",
            ),
            (
                "files/src/../../x",
                tar::EntryType::Regular,
                b"x",
                "climbs out",
            ),
            (
                "files/.git/config",
                tar::EntryType::Regular,
                b"x",
                "inside .git",
            ),
            (
                "files/src/evil",
                tar::EntryType::Symlink,
                b"/etc/passwd",
                "symlink",
            ),
            (
                "files/src/hard",
                tar::EntryType::Link,
                b"/etc/passwd",
                "hard link",
            ),
            (
                "files/src//lib.rs",
                tar::EntryType::Regular,
                b"x",
                "not a plain",
            ),
            (
                "files/src/./lib.rs",
                tar::EntryType::Regular,
                b"x",
                "not a plain",
            ),
            (
                "files/a\nb",
                tar::EntryType::Regular,
                b"x",
                "control character",
            ),
            (
                "files/logo.png",
                tar::EntryType::Regular,
                b"\x89PNG\xff\xfe",
                "binary",
            ),
            (
                "files/nul.txt",
                tar::EntryType::Regular,
                b"text\0more",
                "binary",
            ),
            (
                "files/README/x",
                tar::EntryType::Regular,
                b"x",
                "README and a path inside it",
            ),
            (
                "../outside",
                tar::EntryType::Regular,
                b"x",
                "unexpected entry",
            ),
        ] {
            let err = ChangeSet::from_capture(&capture(&[(name, kind, data)], &[]), dir.path())
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{name}: {err}");
        }
        let err =
            ChangeSet::from_capture(&capture(&[], &["../../etc/shadow"]), dir.path()).unwrap_err();
        assert!(err.to_string().contains("climbs out"), "{err}");
        let err = ChangeSet::from_capture(
            &capture(&[("files/README", tar::EntryType::Regular, b"hi\n")], &[]),
            dir.path(),
        )
        .unwrap_err();
        assert_eq!(err, Refused::Empty);
    }

    #[test]
    fn every_changed_path_shows_in_the_diff_the_guard_reads() {
        let dir = repo();
        std::fs::create_dir_all(dir.path().join("tests")).unwrap();
        std::fs::write(dir.path().join("tests/test_empty.py"), "").unwrap();
        std::fs::write(dir.path().join("CODEOWNERS"), "").unwrap();
        // An empty file added under a protected path, an empty test deleted, a mode change.
        let tar = capture(
            &[
                ("files/.github/CODEOWNERS", tar::EntryType::Regular, b""),
                ("files/README", tar::EntryType::Regular, b"hi\n"),
            ],
            &["tests/test_empty.py"],
        );
        let mut set = ChangeSet::from_capture(&tar, dir.path()).unwrap();
        set.files.push(FileChange {
            path: "CODEOWNERS".into(),
            content: Some(Vec::new()),
            executable: true,
        });
        let diff = set.diff(dir.path()).unwrap();
        assert!(diff.contains("+++ b/.github/CODEOWNERS\n"), "{diff}");
        assert!(
            diff.contains("--- a/tests/test_empty.py\n+++ /dev/null\n"),
            "{diff}"
        );
        assert!(
            diff.contains("old mode 100644\nnew mode 100755\n--- a/CODEOWNERS\n+++ b/CODEOWNERS\n"),
            "{diff}"
        );
        assert!(crate::heal::refuses(&diff)
            .unwrap()
            .contains("deletes test file"));
    }

    #[test]
    fn never_reads_or_writes_through_a_symlink_on_the_host() {
        let dir = repo();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "host secret\n").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        // The original side: a diff of link/secret would show the host file's content.
        let tar = capture(
            &[("files/link/secret", tar::EntryType::Regular, b"x\n")],
            &[],
        );
        let err = ChangeSet::from_capture(&tar, dir.path()).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        // The writing side (`heal --apply`).
        let set = ChangeSet {
            files: vec![FileChange {
                path: "link/secret".into(),
                content: Some(b"overwritten\n".to_vec()),
                executable: false,
            }],
        };
        assert!(set.write_to(dir.path()).is_err());
        assert_eq!(
            std::fs::read_to_string(outside.path().join("secret")).unwrap(),
            "host secret\n"
        );
    }
}
