//! Which host ids a box's ids are, and the host directories the sandbox keeps its state in: the
//! two things that differ between a sandbox run by root and one run by an ordinary user
//! (rootless).
//!
//! - **Root**: each live box takes its own range of 65536 host ids (an id slot, see
//!   [`crate::host`]), so no two boxes share a host uid and per-user kernel counters are the box's
//!   own.
//! - **Rootless with subordinate ids**: the user's range in `/etc/subuid` and `/etc/subgid`, written
//!   through the setuid helpers `newuidmap` and `newgidmap` (the `uidmap` package) because an
//!   ordinary user may not write a map of more than its own id. Every box of the user shares that
//!   range; inside, the box is laid out exactly as under root (init 0, warm workers 999, programs
//!   1000), except that the box's 1000 is the user's own uid and gid, so that the init (root of the
//!   box, whose capabilities reach only files of ids mapped in it) reaches what the user reaches:
//!   the state directory, toolchains in the user's home.
//! - **Rootless with the user's own ids only**: the kernel lets an ordinary user map exactly its
//!   own uid and gid (after denying `setgroups`). The box's programs *and* its init are then that
//!   one id (the box's 1000); the init keeps its capabilities because it created the namespace.
//!   With one id there is no uid of their own for warm workers, so runs start cold, and the user's
//!   supplementary groups stay on every box process (the kernel forbids dropping them once
//!   `setgroups` is denied). `docs/security.md` lists what this mode gives up.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::init::ID_RANGE;

/// The host ids a box's ids map to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdMap {
    /// Host root: the box's ids 0 to [`ID_RANGE`] are the host's from `base` (the box's slot).
    HostRange { base: u32 },
    /// Rootless: the box's ids 0 to [`ID_RANGE`] are the user's subordinate ids from `uid` and
    /// `gid`, mapped by `newuidmap` and `newgidmap`.
    Subordinate { uid: u32, gid: u32 },
    /// Rootless without subordinate ids: only the box's [`crate::init::SANDBOX_UID`] is mapped,
    /// to the user's own `uid` and `gid`.
    Own { uid: u32, gid: u32 },
}

impl IdMap {
    /// Whether the box has only one id (warm workers, which need a uid of their own, are off).
    pub fn single(&self) -> bool {
        matches!(self, IdMap::Own { .. })
    }

    /// One line for `doctor` and the isolation notes.
    pub fn describe(&self) -> String {
        match self {
            IdMap::HostRange { .. } => "each box maps its own range of 65536 host ids".into(),
            IdMap::Subordinate { uid, gid } => format!(
                "rootless: boxes map the user's subordinate ids (uids from {uid}, gids from \
                 {gid}, 65536 each, through newuidmap/newgidmap) and the user's own ids as the \
                 box's 1000; every box of this user shares these ids"
            ),
            IdMap::Own { uid, gid } => format!(
                "rootless without subordinate ids: boxes map only this user's own uid {uid} and \
                 gid {gid}, so runs start cold (no warm workers) and box processes keep this \
                 user's supplementary groups; for the full layout give the user a range of \
                 65536 ids in /etc/subuid and /etc/subgid and install newuidmap (the uidmap \
                 package)"
            ),
        }
    }
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The ids rootless boxes of this user get: the subordinate range when `newuidmap` and
/// `newgidmap` are installed and both `/etc/subuid` and `/etc/subgid` give the user at least
/// [`ID_RANGE`] ids, else the user's own ids.
pub fn rootless_map() -> IdMap {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let name = user_name(uid);
    let helpers = ["newuidmap", "newgidmap"]
        .iter()
        .all(|h| find_helper(h).is_some());
    let sub = |file: &str, id: u32| {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|text| subordinate_start(&text, id, name.as_deref()))
    };
    match (helpers, sub("/etc/subuid", uid), sub("/etc/subgid", gid)) {
        (true, Some(uid), Some(gid)) => IdMap::Subordinate { uid, gid },
        _ => IdMap::Own { uid, gid },
    }
}

/// Where the setuid map helper `name` is: the standard places only, never a directory from the
/// environment's `PATH`, which the user controls.
pub fn find_helper(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

/// The user's name (from the system's user database), which `/etc/subuid` may use instead of the
/// number.
fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|user| user.name)
}

/// The start of the first range in a `subuid`/`subgid` file (`name-or-id:start:count` lines)
/// that belongs to `id` or `name` and holds at least [`ID_RANGE`] ids.
fn subordinate_start(text: &str, id: u32, name: Option<&str>) -> Option<u32> {
    text.lines().find_map(|line| {
        let mut fields = line.trim().split(':');
        let owner = fields.next()?;
        let start: u32 = fields.next()?.parse().ok()?;
        let count: u64 = fields.next()?.parse().ok()?;
        let ours = owner == id.to_string() || Some(owner) == name;
        let fits = count >= u64::from(ID_RANGE) && u64::from(start) + count <= u64::from(u32::MAX);
        (ours && fits).then_some(start)
    })
}

/// The default directory for the sandbox's state (the shared root mount point, the id slots):
/// `/run/codebeaker` for root; for an ordinary user `$XDG_RUNTIME_DIR/codebeaker`, or
/// `/tmp/codebeaker-<uid>` when the session has no runtime directory.
pub fn default_state_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/run/codebeaker");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| Path::new(d).is_absolute()) {
        Some(dir) => Path::new(&dir).join("codebeaker"),
        None => PathBuf::from(format!(
            "/tmp/codebeaker-{}",
            rustix::process::getuid().as_raw()
        )),
    }
}

/// The default directory for caches (compiled programs, toolchain probes):
/// `/var/cache/codebeaker` for root; for an ordinary user `$XDG_CACHE_HOME/codebeaker`, or
/// `~/.cache/codebeaker`, or a directory under the state directory when there is no home.
pub fn default_cache_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/cache/codebeaker");
    }
    let absolute = |var: &str| std::env::var_os(var).filter(|d| Path::new(d).is_absolute());
    if let Some(dir) = absolute("XDG_CACHE_HOME") {
        return Path::new(&dir).join("codebeaker");
    }
    if let Some(home) = absolute("HOME") {
        return Path::new(&home).join(".cache").join("codebeaker");
    }
    default_state_dir().join("cache")
}

/// Creates `dir` (and its parents) for this user's sandbox state when it is missing, and checks
/// that it is a directory of this user that nobody else may write (so that another user cannot
/// have made it first, in `/tmp`, to hand the sandbox a root mount point of theirs).
pub fn ensure_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    let me = rustix::process::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a directory of this user (uid {me}) that only it may write; remove it \
                 or choose another sandbox state_dir",
                dir.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subordinate_range_is_found_by_name_or_number_and_must_be_large_enough() {
        let text = "alice:100000:65536\n1001:200000:65536\nbob:300000:1000\n";
        assert_eq!(subordinate_start(text, 1000, Some("alice")), Some(100000));
        assert_eq!(subordinate_start(text, 1001, Some("carol")), Some(200000));
        assert_eq!(
            subordinate_start(text, 1002, Some("bob")),
            None,
            "too small"
        );
        assert_eq!(subordinate_start(text, 1003, None), None);
        assert_eq!(subordinate_start("x:4294967000:65536", 0, Some("x")), None);
        assert_eq!(subordinate_start("garbage\n::\n", 0, Some("")), None);
    }

    #[test]
    fn a_private_dir_must_be_ours_and_closed_to_others() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        ensure_private_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = ensure_private_dir(&dir).unwrap_err();
        assert!(err.to_string().contains("only it may write"), "{err}");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(tmp.path(), &link).unwrap();
        assert!(ensure_private_dir(&link).is_err(), "a symlink is refused");
    }
}
