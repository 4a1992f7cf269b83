//! `additional_files`: a base64 zip archive unpacked into the run's workspace. Unpacking is
//! bounded: the bytes actually decompressed (not the sizes the archive claims) against
//! `max_extract_size`, the number of entries, and every path must stay inside the workspace
//! (relative, no `..`; the box resolves it again in its own view). It runs off the async runtime.

use std::io::Read;
use std::path::Component;

/// The most entries an archive may hold.
pub(crate) const MAX_FILES: usize = 1000;

/// A file to write: its path relative to the workspace, and its contents.
pub(crate) type File = (String, Vec<u8>);

/// Unpacks `archive` (the zip's bytes), at most `max_bytes` decompressed in all. The error says
/// what is wrong with the archive, for the client.
pub(crate) fn unpack(archive: &[u8], max_bytes: u64) -> Result<Vec<File>, String> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(archive))
        .map_err(|e| format!("is not a zip archive ({e})"))?;
    if zip.len() > MAX_FILES {
        return Err(format!(
            "holds {} entries; at most {MAX_FILES} are unpacked",
            zip.len()
        ));
    }
    let mut files = Vec::new();
    let mut remaining = max_bytes;
    for index in 0..zip.len() {
        let mut entry = zip
            .by_index(index)
            .map_err(|e| format!("has an entry that cannot be read ({e})"))?;
        if entry.is_dir() {
            continue;
        }
        let name = entry
            .name()
            .map_err(|e| format!("has an entry whose name cannot be read ({e})"))?
            .to_string();
        let path = relative_path(&name)?;
        if entry.is_symlink() {
            return Err(format!(
                "holds the symbolic link {name:?}; only files are unpacked"
            ));
        }
        let mut data = Vec::new();
        // One byte more than is left tells an entry that is too large, whatever it claims.
        (&mut entry)
            .take(remaining.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(|e| format!("has an entry that cannot be decompressed ({name}: {e})"))?;
        let size = data.len() as u64;
        remaining = remaining.checked_sub(size).ok_or_else(|| {
            format!(
                "unpacks to more than {} KB, the most this server takes (max_extract_size)",
                max_bytes / 1024
            )
        })?;
        files.push((path, data));
    }
    Ok(files)
}

/// `name` as a path inside the workspace: relative, with no `..`, `.` or empty parts.
fn relative_path(name: &str) -> Result<String, String> {
    let refuse = || format!("holds {name:?}, a path outside the working directory");
    if name.is_empty() || name.contains('\0') || name.contains('\\') {
        return Err(refuse());
    }
    let mut parts = Vec::new();
    for component in std::path::Path::new(name).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str().ok_or_else(refuse)?),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(refuse())
            }
        }
    }
    if parts.is_empty() {
        return Err(refuse());
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, data) in entries {
            zip.start_file(*name, options).expect("start");
            zip.write_all(data).expect("write");
        }
        zip.finish().expect("finish").into_inner()
    }

    #[test]
    fn files_unpack_with_their_paths() {
        let files = unpack(&archive(&[("a.txt", b"A"), ("./dir/b.txt", b"B")]), 1024).expect("ok");
        assert_eq!(
            files,
            vec![
                ("a.txt".into(), b"A".to_vec()),
                ("dir/b.txt".into(), b"B".to_vec())
            ]
        );
    }

    #[test]
    fn paths_out_of_the_workspace_are_refused() {
        for name in ["../x", "/etc/passwd", "a/../../x", "a\\..\\x"] {
            let error = unpack(&archive(&[(name, b"x")]), 1024).expect_err(name);
            assert!(
                error.contains("outside the working directory"),
                "{name}: {error}"
            );
        }
    }

    #[test]
    fn the_decompressed_size_is_bounded() {
        let zeros = vec![0u8; 1 << 20];
        let error = unpack(&archive(&[("big", &zeros)]), 64 * 1024).expect_err("too large");
        assert!(error.contains("max_extract_size"), "{error}");
        assert!(unpack(b"not a zip", 1024).is_err());
    }
}
