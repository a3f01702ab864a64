//! The work archive uploaded into a sandbox's volume: the checkout (with a change set laid
//! over it) and extra files, every entry owned by the sandbox's unprivileged user, so the
//! repository's code runs without root and still owns its work tree.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::changes::ChangeSet;

/// The sandbox image's unprivileged user (`sandbox`, made by scripts/sandbox-image.sh).
pub const SANDBOX_UID: u64 = 1000;

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(SANDBOX_UID);
    h.set_gid(SANDBOX_UID);
    h.set_mtime(0);
    h
}

/// `repo/…` with `overlay` laid over it, and the extra files, as a tar archive for upload
/// into the work volume. Build output (`target/`) stays behind: the sandbox builds from source.
pub fn work_archive(
    repo: &Path,
    overlay: Option<&ChangeSet>,
    files: &[(&str, &[u8])],
) -> Result<Vec<u8>, std::io::Error> {
    let mut builder = tar::Builder::new(Vec::new());
    let replaced: HashSet<PathBuf> = overlay
        .map(|o| o.paths().map(PathBuf::from).collect())
        .unwrap_or_default();
    // The volume's root too, so the sandbox can write its own files beside the checkout.
    builder.append_data(
        &mut header(tar::EntryType::Directory, 0o755, 0),
        ".",
        std::io::empty(),
    )?;
    builder.append_data(
        &mut header(tar::EntryType::Directory, 0o755, 0),
        "repo",
        std::io::empty(),
    )?;
    append_tree(&mut builder, repo, Path::new(""), &replaced)?;
    for change in overlay.map(|o| o.files.as_slice()).unwrap_or_default() {
        let Some(content) = &change.content else {
            continue;
        };
        // Paths were checked when the change set was made: relative, normal, not in .git.
        let path = Path::new("repo").join(&change.path);
        let mut ancestors: Vec<&Path> = path.ancestors().skip(1).collect();
        ancestors.reverse();
        for dir in ancestors.into_iter().filter(|d| d.components().count() > 1) {
            builder.append_data(
                &mut header(tar::EntryType::Directory, 0o755, 0),
                dir,
                std::io::empty(),
            )?;
        }
        let mode = if change.executable { 0o755 } else { 0o644 };
        builder.append_data(
            &mut header(tar::EntryType::Regular, mode, content.len() as u64),
            &path,
            content.as_slice(),
        )?;
    }
    for (name, data) in files {
        builder.append_data(
            &mut header(tar::EntryType::Regular, 0o644, data.len() as u64),
            name,
            *data,
        )?;
    }
    builder.into_inner()
}

/// Appends `root/rel` under `repo/rel`, leaving out build output at the top and the paths the
/// overlay replaces or deletes. Symlinks are kept as symlinks, never followed.
fn append_tree(
    builder: &mut tar::Builder<Vec<u8>>,
    root: &Path,
    rel: &Path,
    replaced: &HashSet<PathBuf>,
) -> Result<(), std::io::Error> {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let name = entry.file_name();
        if rel.as_os_str().is_empty()
            && (name == "target" || name == "node_modules" || name == "__pycache__")
        {
            continue;
        }
        let inner = rel.join(&name);
        if replaced.contains(&inner) {
            continue;
        }
        let path = Path::new("repo").join(&inner);
        let meta = std::fs::symlink_metadata(entry.path())?;
        let mode = meta.permissions().mode() & 0o755;
        let kind = meta.file_type();
        if kind.is_dir() {
            builder.append_data(
                &mut header(tar::EntryType::Directory, mode | 0o700, 0),
                &path,
                std::io::empty(),
            )?;
            append_tree(builder, root, &inner, replaced)?;
        } else if kind.is_symlink() {
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            builder.append_link(&mut h, &path, std::fs::read_link(entry.path())?)?;
        } else if kind.is_file() {
            let file = std::fs::File::open(entry.path())?;
            builder.append_data(
                &mut header(tar::EntryType::Regular, mode | 0o600, meta.len()),
                &path,
                file,
            )?;
        }
    }
    Ok(())
}
