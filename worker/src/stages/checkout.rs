//! The repository at the failing SHA, fetched with the installation token (the tarball
//! endpoint) into a per-run work dir that is removed when dropped.
//!
//! The tarball is the repository's to shape, so it is bounded at every step: streamed to a
//! file (never held in memory) up to a compressed size, and unpacked up to a total size and a
//! number of entries (a gzip bomb or a million empty files stops here, with the reason).
//! Regular files, directories and symlinks at normal relative paths are written, so the
//! checkout (and the tree validated from it) is the commit's; hard links and device files are
//! left out. Nothing is ever written through a symlink: an entry whose path passes through
//! one, or lands on one, is skipped. The checkout's symlinks are never followed afterwards
//! either (`crate::changes` refuses changes through them).

use std::io::{Read, Seek, Write};
use std::path::{Component, PathBuf};

use selfheal_shared::runs::Run;

use super::download::download;
use super::StageError;
use crate::WorkerContext;

/// Bounds on one checkout.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub archive_bytes: u64,
    pub unpacked_bytes: u64,
    pub entries: u64,
}

pub const CAPS: Caps = Caps {
    archive_bytes: 512 * 1024 * 1024,
    unpacked_bytes: 2 * 1024 * 1024 * 1024,
    entries: 200_000,
};

pub async fn checkout(ctx: &WorkerContext, run: &Run) -> Result<tempfile::TempDir, StageError> {
    let crab = ctx
        .github
        .installation(run.installation_id, &run.repository_full_name)?;
    let what = format!("tarball of {}@{}", run.repository_full_name, run.head_sha);
    let io = |e: std::io::Error| StageError::Transient(format!("spooling the tarball: {e}"));
    let mut file = tempfile::tempfile().map_err(io)?;
    let mut size: u64 = 0;
    download(
        ctx,
        &crab,
        format!(
            "/repos/{}/tarball/{}",
            run.repository_full_name, run.head_sha
        ),
        &what,
        |chunk| {
            size += chunk.len() as u64;
            if size > CAPS.archive_bytes {
                return Err(StageError::Permanent(format!(
                    "{what} is over {} bytes",
                    CAPS.archive_bytes
                )));
            }
            file.write_all(chunk).map_err(io)
        },
    )
    .await?;
    file.rewind().map_err(io)?;
    tokio::task::spawn_blocking(move || unpack(std::io::BufReader::new(file), CAPS))
        .await
        .map_err(|e| StageError::Transient(format!("unpacking: {e}")))?
}

/// Whether a link at `at` (relative to the repository root) pointing to `target` resolves
/// inside the repository. Lexically, and the target must go up first and then only down:
/// `l/../..` counts `..` against `l`, but if `l` is itself a link the walk leaves from
/// wherever `l` points. Going only down from inside, through links that all stay inside,
/// stays inside.
fn stays_inside(at: &std::path::Path, target: &std::path::Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth = at.components().count() as i64 - 1;
    let mut descending = false;
    for c in target.components() {
        match c {
            Component::ParentDir if descending => return false,
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => {
                descending = true;
                depth += 1
            }
            Component::CurDir => {}
            _ => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// Unpacks GitHub's tarball without its top-level `<owner>-<repo>-<sha>/` directory.
pub fn unpack(gz: impl Read, caps: Caps) -> Result<tempfile::TempDir, StageError> {
    let bad = |e: std::io::Error| {
        StageError::Permanent(format!("the repository tarball is unreadable: {e}"))
    };
    let too_big = |what: String| StageError::Permanent(format!("the repository tarball {what}"));
    let dir = tempfile::Builder::new()
        .prefix("selfheal-run-")
        .tempdir()
        .map_err(|e| StageError::Transient(e.to_string()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let (mut entries, mut unpacked) = (0u64, 0u64);
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        entries += 1;
        if entries > caps.entries {
            return Err(too_big(format!("has over {} entries", caps.entries)));
        }
        let path = entry.path().map_err(bad)?.into_owned();
        let inner: PathBuf = path.components().skip(1).collect();
        if inner.as_os_str().is_empty()
            || inner
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
        {
            continue;
        }
        let target = dir.path().join(&inner);
        if crate::changes::obstacle(dir.path(), &inner).is_some() {
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_symlink() {
            // Only links that stay inside the repository: Docker refuses to upload one that
            // points out of the work dir, and nothing outside is the repository's anyway.
            let inside = entry
                .link_name()
                .map_err(bad)?
                .filter(|link| stays_inside(&inner, link));
            if let Some(link) = inside {
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(bad)?;
                }
                // An entry seen twice keeps its first form.
                let _ = std::os::unix::fs::symlink(link, &target);
            }
        } else if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(bad)?;
        } else if kind.is_file() {
            unpacked += entry.size();
            if unpacked > caps.unpacked_bytes {
                return Err(too_big(format!(
                    "unpacks to over {} bytes",
                    caps.unpacked_bytes
                )));
            }
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(bad)?;
            }
            let mut out = std::fs::File::create(&target).map_err(bad)?;
            // The header's size is the entry's; `take` holds it to that even so.
            let size = entry.size();
            std::io::copy(&mut entry.by_ref().take(size), &mut out).map_err(bad)?;
            #[cfg(unix)]
            if let Ok(mode) = entry.header().mode() {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(
                    &target,
                    std::fs::Permissions::from_mode(mode & 0o755),
                );
            }
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(files: &[(&str, &[u8])], links: &[(&str, &str)]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, format!("octo-repo-abc/{path}"), *data)
                .unwrap();
        }
        for (path, target) in links {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_cksum();
            b.append_link(&mut h, format!("octo-repo-abc/{path}"), target)
                .unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    const SMALL: Caps = Caps {
        archive_bytes: 1 << 20,
        unpacked_bytes: 1000,
        entries: 10,
    };

    #[test]
    fn unpacks_files_and_links_and_never_writes_through_a_link() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "host\n").unwrap();
        let out = outside.path().display().to_string();
        let secret = format!("{out}/secret");
        // Links first, then files that would land through them: a classic tar attack.
        let tgz = tarball_in_order(&[
            Entry::Link("escape", &out),
            Entry::Link("leak", &secret),
            // A link inside the repository is kept; a file through it is not written.
            Entry::Link("inlink", "src"),
            Entry::File("inlink/evil.rs", b"planted\n"),
            Entry::File("src/lib.rs", b"fn a() {}\n"),
            Entry::File("escape/planted", b"owned\n"),
            Entry::File("leak", b"overwritten\n"),
        ]);
        let dir = unpack(tgz.as_slice(), SMALL).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("src/lib.rs")).unwrap(),
            "fn a() {}\n"
        );
        // Links out of the repository are left out; the file of the same name is written
        // as a plain file, on this side.
        assert!(!std::fs::symlink_metadata(dir.path().join("leak"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(super::stays_inside(
            std::path::Path::new("a/b"),
            std::path::Path::new("../c")
        ));
        assert!(!super::stays_inside(
            std::path::Path::new("a"),
            std::path::Path::new("../../etc")
        ));
        assert!(!super::stays_inside(
            std::path::Path::new("a"),
            std::path::Path::new("/etc")
        ));
        // `d/a/l -> ../..` is the root; `d/a/m -> l/../..` would be the root's parent.
        assert!(super::stays_inside(
            std::path::Path::new("d/a/l"),
            std::path::Path::new("../..")
        ));
        assert!(!super::stays_inside(
            std::path::Path::new("d/a/m"),
            std::path::Path::new("l/../..")
        ));
        assert!(!outside.path().join("planted").exists());
        assert!(std::fs::symlink_metadata(dir.path().join("inlink"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(!dir.path().join("src/evil.rs").exists());
        assert_eq!(
            std::fs::read_to_string(outside.path().join("secret")).unwrap(),
            "host\n"
        );
    }

    enum Entry<'a> {
        File(&'a str, &'a [u8]),
        Link(&'a str, &'a str),
    }

    fn tarball_in_order(entries: &[Entry]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for e in entries {
            let mut h = tar::Header::new_gnu();
            match e {
                Entry::File(path, data) => {
                    h.set_size(data.len() as u64);
                    h.set_mode(0o644);
                    h.set_cksum();
                    b.append_data(&mut h, format!("octo-repo-abc/{path}"), *data)
                        .unwrap();
                }
                Entry::Link(path, target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    h.set_cksum();
                    b.append_link(&mut h, format!("octo-repo-abc/{path}"), target)
                        .unwrap();
                }
            }
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn a_bomb_or_a_swarm_of_files_is_refused_with_the_reason() {
        let big = vec![0u8; 4096];
        let err = unpack(tarball(&[("zeros", &big)], &[]).as_slice(), SMALL)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unpacks to over 1000 bytes"), "{err}");
        let names: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
        let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
        let err = unpack(tarball(&files, &[]).as_slice(), SMALL)
            .unwrap_err()
            .to_string();
        assert!(err.contains("over 10 entries"), "{err}");
    }
}
