//! File operations from inside the box, for the host.
//!
//! They run in the init, so they see exactly the box's view, never the host's. The init switches
//! its filesystem uid to the sandbox user for each operation (which also drops its filesystem
//! capabilities), so it can touch nothing the sandboxed program could not. Every path is opened
//! component by component with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` from the root
//! directory of the operation, so `..` and planted symlinks cannot lead anywhere else; listings
//! and removals never follow symlinks either. A run's working directory is checked the same way.
//! Reads are sent in pieces from one buffer ([`read_chunks`]), so that answering needs no memory
//! a box full of files no longer has.

use std::collections::VecDeque;
use std::ffi::{CStr, CString};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::SANDBOX_UID;
use crate::channel::{Entry, EntryKind, FileRoot, WriteFile};

type R<T> = Result<T, String>;

/// Deepest directory tree a recursive removal descends into.
const MAX_REMOVE_DEPTH: usize = 256;

/// Runs `f` with the sandbox user's filesystem identity.
fn as_sandbox_user<T>(f: impl FnOnce() -> R<T>) -> R<T> {
    // SAFETY: setfsuid/setfsgid only change this (single) thread's filesystem ids.
    unsafe {
        libc::setfsgid(SANDBOX_UID);
        libc::setfsuid(SANDBOX_UID);
    }
    let result = f();
    // SAFETY: as above, back to root of the box.
    unsafe {
        libc::setfsuid(0);
        libc::setfsgid(0);
    }
    result
}

/// Splits a relative path into its components, refusing anything that is not a plain name.
/// The empty path and `.` mean the root itself (an empty list).
fn components(path: &str) -> R<Vec<&str>> {
    if path.contains('\0') {
        return Err("path contains a NUL byte".into());
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(format!("path {path:?} contains '..'"));
    }
    Ok(parts)
}

/// Like [`components`], for operations that need a named entry (not the root itself).
fn named(path: &str) -> R<(Vec<&str>, &str)> {
    let mut parts = components(path)?;
    let name = parts
        .pop()
        .ok_or("the path names the root directory itself")?;
    Ok((parts, name))
}

const STRICT: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS);

fn errno_text(e: Errno) -> String {
    match e {
        Errno::XDEV | Errno::LOOP => {
            "a symlink on the way leads outside (or is not followed)".into()
        }
        Errno::NOENT => "no such file or directory".into(),
        Errno::NOTDIR => "not a directory".into(),
        Errno::ISDIR => "is a directory".into(),
        Errno::EXIST => "already exists".into(),
        Errno::NOSPC => "no space left (the size cap is reached)".into(),
        Errno::DQUOT => "no space left (the size cap is reached)".into(),
        Errno::ACCESS | Errno::PERM => "permission denied".into(),
        Errno::NOTEMPTY => "directory not empty".into(),
        // What a non-blocking open of a FIFO without a reader (or of a socket) fails with.
        Errno::NXIO => "not a regular file (FIFOs, sockets and devices are refused)".into(),
        e => e.to_string(),
    }
}

fn open_dir(parent: &OwnedFd, name: &str) -> R<OwnedFd> {
    open_dir_named(parent, name, name)
}

/// Opens the directory `name` (raw bytes, which need not be UTF-8) below `parent`; errors call it
/// `shown`.
fn open_dir_named<P: rustix::path::Arg + Copy>(
    parent: &OwnedFd,
    name: P,
    shown: &str,
) -> R<OwnedFd> {
    rustix::fs::openat2(
        parent,
        name,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        STRICT,
    )
    .map_err(|e| {
        // A planted symlink (to `/`, `/proc/1/root`, ...) fails as "not a directory" here; say
        // what it really is.
        let symlink = matches!(e, Errno::NOTDIR | Errno::LOOP)
            && rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Symlink);
        if symlink {
            format!("{shown}: is a symlink, and symlinks are not followed")
        } else {
            format!("{shown}: {}", errno_text(e))
        }
    })
}

fn open_root(root: FileRoot) -> R<OwnedFd> {
    rustix::fs::open(
        root.dir(),
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("{}: {e}", root.dir()))
}

/// Opens the directory `parts` below `root`, optionally creating missing components.
fn walk(root: FileRoot, parts: &[&str], create: bool) -> R<OwnedFd> {
    let mut dir = open_root(root)?;
    for part in parts {
        if create {
            match rustix::fs::mkdirat(&dir, *part, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(format!("creating directory {part}: {}", errno_text(e))),
            }
        }
        dir = open_dir(&dir, part)?;
    }
    Ok(dir)
}

/// Opens a regular file (or a directory, for the caller to refuse). Never blocks: a program can
/// plant a FIFO (`mkfifo`), and a blocking open of it would wait for a peer that never comes
/// (every process of the box is gone after a run), hanging the init until the host declares the
/// box unresponsive and the session is lost. `O_NONBLOCK` makes such an open return at once
/// (`ENXIO` for a writer without a reader) and has no effect on regular files; whatever opened
/// and is not a regular file or a directory is refused.
fn open_file(dir: &OwnedFd, name: &str, flags: OFlags, mode: u32, shown: &str) -> R<OwnedFd> {
    let fd = rustix::fs::openat2(
        dir,
        name,
        flags | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK,
        Mode::from_raw_mode(mode),
        STRICT,
    )
    .map_err(|e| format!("{shown}: {}", errno_text(e)))?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| format!("{shown}: {e}"))?;
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile | FileType::Directory => Ok(fd),
        _ => Err(format!("{shown}: {}", errno_text(Errno::NXIO))),
    }
}

fn write_impl(req: &WriteFile, append: bool) -> R<()> {
    let (parents, name) = named(&req.path)?;
    as_sandbox_user(|| {
        let dir = walk(req.root, &parents, true)?;
        let mode = if req.executable { 0o755 } else { 0o644 };
        let flags = if append {
            OFlags::WRONLY | OFlags::CREATE | OFlags::APPEND
        } else {
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC
        };
        let fd = open_file(&dir, name, flags, mode, &req.path)?;
        let mut file = std::fs::File::from(fd);
        file.write_all(&req.data)
            .map_err(|e| format!("writing {}: {e}", req.path))
    })
}

/// Writes a file (replacing it), creating its parent directories.
pub fn write(req: &WriteFile) -> R<()> {
    write_impl(req, false)
}

/// Appends to a file (creating it and its parent directories).
pub fn append(req: &WriteFile) -> R<()> {
    write_impl(req, true)
}

/// Why a streamed read ended early.
pub enum ReadError {
    /// The read was refused or failed; the pieces already sent are void.
    Failed(String),
    /// Sending a piece failed: the host is gone.
    HostGone,
}

/// Reads a file of at most `max_bytes` and hands it to `send` in pieces of at most `buf.len()`
/// bytes, read into `buf`: the init holds no more of the file than that, so a box whose memory is
/// full of files can still be answered (a whole-file buffer would need memory the box no longer
/// has). A larger file is refused by its size before anything is read, and by the bytes actually
/// read (it may grow while being read).
pub fn read_chunks(
    root: FileRoot,
    path: &str,
    max_bytes: u64,
    buf: &mut [u8],
    send: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<(), ReadError> {
    let too_large = || ReadError::Failed(format!("{path} is larger than {max_bytes} bytes"));
    let (parents, name) = named(path).map_err(ReadError::Failed)?;
    let fd = as_sandbox_user(|| {
        let dir = walk(root, &parents, false)?;
        open_file(&dir, name, OFlags::RDONLY, 0, path)
    })
    .map_err(ReadError::Failed)?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| ReadError::Failed(format!("{path}: {e}")))?;
    if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
        return Err(ReadError::Failed(format!("{path}: is a directory")));
    }
    if stat.st_size as u64 > max_bytes {
        return Err(too_large());
    }
    let mut file = std::fs::File::from(fd);
    let mut total: u64 = 0;
    loop {
        let n = match file.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadError::Failed(format!("reading {path}: {e}"))),
        };
        total += n as u64;
        if total > max_bytes {
            return Err(too_large());
        }
        if !send(&buf[..n]) {
            return Err(ReadError::HostGone);
        }
    }
}

/// Checks, as the sandbox user, that a run's working directory (absolute in the box) under
/// `/workspace` or `/tmp` is reached without `..` and without following a symlink, so that a
/// symlink a program planted is refused with a clear error. The run's process enters the
/// directory itself only after its uid drop, again refusing symlinks (see `child::enter_cwd`); this
/// check gives the caller the reason.
pub fn check_workdir(path: &str) -> R<()> {
    let shown = |e: String| format!("working directory {path}: {e}");
    for root in [FileRoot::Workspace, FileRoot::Tmp] {
        let Some(rest) = path.strip_prefix(root.dir()) else {
            continue;
        };
        if !rest.is_empty() && !rest.starts_with('/') {
            continue;
        }
        let parts = components(rest).map_err(shown)?;
        return as_sandbox_user(|| walk(root, &parts, false).map(drop)).map_err(shown);
    }
    Ok(())
}

/// Creates a directory (and, with `recursive`, its parents).
pub fn create_dir(root: FileRoot, path: &str, recursive: bool) -> R<()> {
    let (parents, name) = named(path)?;
    as_sandbox_user(|| {
        let dir = walk(root, &parents, recursive)?;
        match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755)) {
            Ok(()) => Ok(()),
            Err(Errno::EXIST) if recursive => open_dir(&dir, name)
                .map(|_| ())
                .map_err(|_| format!("{path}: exists and is not a directory")),
            Err(e) => Err(format!("{path}: {}", errno_text(e))),
        }
    })
}

/// Removes a file or symlink, or a directory (its contents too with `recursive`). `Ok(false)`
/// when nothing was there.
pub fn remove(root: FileRoot, path: &str, recursive: bool) -> R<bool> {
    let (parents, name) = named(path)?;
    as_sandbox_user(|| {
        let dir = match walk(root, &parents, false) {
            Ok(dir) => dir,
            Err(_) if parents.is_empty() => return Err(format!("{}: cannot open", root.dir())),
            Err(_) => return Ok(false),
        };
        let name = CString::new(name).map_err(|_| "path contains a NUL byte".to_string())?;
        remove_entry(&dir, &name, recursive, 0).map_err(|e| format!("{path}: {e}"))
    })
}

/// Names are raw bytes: a program may create names that are not UTF-8, and those must be
/// removable too.
fn remove_entry(dir: &OwnedFd, name: &CStr, recursive: bool, depth: usize) -> R<bool> {
    let stat = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(Errno::NOENT) => return Ok(false),
        Err(e) => return Err(errno_text(e)),
    };
    if FileType::from_raw_mode(stat.st_mode) != FileType::Directory {
        rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(errno_text)?;
        return Ok(true);
    }
    if recursive {
        if depth >= MAX_REMOVE_DEPTH {
            return Err(format!(
                "directory tree deeper than {MAX_REMOVE_DEPTH} levels"
            ));
        }
        let child = open_dir_named(dir, name, &name.to_string_lossy())?;
        let names = entry_names(&child)?;
        for n in names {
            remove_entry(&child, &n, true, depth + 1)?;
        }
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(|e| match e {
        Errno::NOTEMPTY => "directory not empty (remove it recursively)".to_string(),
        e => errno_text(e),
    })?;
    Ok(true)
}

/// Copies a regular file; the destination's parent directories are created.
pub fn copy(root: FileRoot, source: &str, destination: &str, overwrite: bool) -> R<u64> {
    let (src_parents, src_name) = named(source)?;
    let (dst_parents, dst_name) = named(destination)?;
    as_sandbox_user(|| {
        let src_dir = walk(root, &src_parents, false)?;
        let src = open_file(&src_dir, src_name, OFlags::RDONLY, 0, source)?;
        let stat = rustix::fs::fstat(&src).map_err(|e| format!("{source}: {e}"))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(format!("{source}: only regular files can be copied"));
        }
        let dst_dir = walk(root, &dst_parents, true)?;
        let flags = if overwrite {
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC
        } else {
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL
        };
        let dst = open_file(&dst_dir, dst_name, flags, stat.st_mode & 0o777, destination).map_err(
            |e| {
                if e.ends_with("already exists") {
                    format!("{destination} already exists (set overwrite to replace it)")
                } else {
                    e
                }
            },
        )?;
        std::io::copy(&mut std::fs::File::from(src), &mut std::fs::File::from(dst))
            .map_err(|e| format!("copying {source} to {destination}: {e}"))
    })
}

/// The entries of a directory (without `.` and `..`), as raw names, sorted.
fn entry_names(dir: &OwnedFd) -> R<Vec<CString>> {
    let mut names: Vec<CString> = rustix::fs::Dir::read_from(dir)
        .map_err(errno_text)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .collect();
    names.sort();
    Ok(names)
}

/// Lists `path` breadth-first, at most `max_entries` entries and `max_depth` levels below it.
pub fn list(
    root: FileRoot,
    path: &str,
    recursive: bool,
    max_depth: u32,
    max_entries: u32,
) -> R<(Vec<Entry>, bool)> {
    let parts = components(path)?;
    as_sandbox_user(|| {
        let start = walk(root, &parts, false)?;
        let prefix = parts.join("/");
        let mut queue = VecDeque::from([(start, prefix, 0u32)]);
        let mut entries = Vec::new();
        while let Some((dir, prefix, depth)) = queue.pop_front() {
            for raw in entry_names(&dir)? {
                if entries.len() >= max_entries as usize {
                    return Ok((entries, true));
                }
                // Looked up by its raw bytes; shown lossily when they are not UTF-8.
                let name = raw.to_string_lossy().into_owned();
                let Ok(stat) = rustix::fs::statat(&dir, raw.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
                else {
                    continue;
                };
                let kind = match FileType::from_raw_mode(stat.st_mode) {
                    FileType::RegularFile => EntryKind::File,
                    FileType::Directory => EntryKind::Dir,
                    FileType::Symlink => EntryKind::Symlink,
                    _ => EntryKind::Other,
                };
                let rel = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                if kind == EntryKind::Dir && recursive && depth + 1 < max_depth {
                    if let Ok(child) = open_dir_named(&dir, raw.as_c_str(), &name) {
                        queue.push_back((child, rel.clone(), depth + 1));
                    }
                }
                entries.push(Entry {
                    path: rel,
                    kind,
                    size: stat.st_size as u64,
                    modified: stat.st_mtime,
                    mode: stat.st_mode & 0o7777,
                });
            }
        }
        Ok((entries, false))
    })
}
