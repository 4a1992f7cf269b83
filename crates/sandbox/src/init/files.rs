//! File operations from inside the box, for the host.
//!
//! They run in the init, so they see exactly the box's view, never the host's. The init switches
//! its filesystem uid to the sandbox user for each operation (which also drops its filesystem
//! capabilities), so it can touch nothing the sandboxed program could not. Every path is opened
//! component by component with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` from the root
//! directory of the operation, so `..` and planted symlinks cannot lead anywhere else.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::SANDBOX_UID;
use crate::wire::{FileRoot, WriteFile};

type R<T> = Result<T, String>;

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
fn components(path: &str) -> R<Vec<&str>> {
    if path.contains('\0') {
        return Err("path contains a NUL byte".into());
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() {
        return Err("path is empty".into());
    }
    if parts.contains(&"..") {
        return Err(format!("path {path:?} contains '..'"));
    }
    Ok(parts)
}

const STRICT: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS);

fn open_dir(parent: &OwnedFd, name: &str) -> R<OwnedFd> {
    rustix::fs::openat2(
        parent,
        name,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        STRICT,
    )
    .map_err(|e| format!("{name}: {e}"))
}

fn open_root(root: FileRoot) -> R<OwnedFd> {
    rustix::fs::open(
        root.dir(),
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("{}: {e}", root.dir()))
}

/// Writes a file, creating its parent directories.
pub fn write(req: &WriteFile) -> R<()> {
    let parts = components(&req.path)?;
    as_sandbox_user(|| {
        let mut dir = open_root(req.root)?;
        let (name, parents) = parts.split_last().ok_or("path is empty")?;
        for part in parents {
            match rustix::fs::mkdirat(&dir, *part, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(format!("creating directory {part}: {e}")),
            }
            dir = open_dir(&dir, part)?;
        }
        let mode = if req.executable { 0o755 } else { 0o644 };
        let fd = rustix::fs::openat2(
            &dir,
            *name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(mode),
            STRICT,
        )
        .map_err(|e| format!("{}: {e}", req.path))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(&req.data)
            .map_err(|e| format!("writing {}: {e}", req.path))
    })
}

/// Reads up to `max_bytes` of a file; a larger file is an error.
pub fn read(root: FileRoot, path: &str, max_bytes: u64) -> R<Vec<u8>> {
    let parts = components(path)?;
    as_sandbox_user(|| {
        let mut dir = open_root(root)?;
        let (name, parents) = parts.split_last().ok_or("path is empty")?;
        for part in parents {
            dir = open_dir(&dir, part)?;
        }
        let fd = rustix::fs::openat2(
            &dir,
            *name,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
            STRICT,
        )
        .map_err(|e| format!("{path}: {e}"))?;
        let mut data = Vec::new();
        std::fs::File::from(fd)
            .take(max_bytes + 1)
            .read_to_end(&mut data)
            .map_err(|e| format!("reading {path}: {e}"))?;
        if data.len() as u64 > max_bytes {
            return Err(format!("{path} is larger than {max_bytes} bytes"));
        }
        Ok(data)
    })
}
