//! The one path resolver. Every path a caller gives a command goes through [`resolve`] before it
//! reaches a box.
//!
//! Callers may write paths relative to the workspace (`src/main.py`) or absolute under it
//! (`/workspace/src/main.py`). Anything else is refused with a clear error: `..` components,
//! absolute paths elsewhere, NUL bytes. This is the lexical half; the box's init does the other
//! half, opening each component with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, so a symlink the
//! program planted cannot lead out either. A shell command's `workingDirectory` goes the same way:
//! resolved here, then checked component by component by the init as the sandbox user, and
//! entered by the run's process only after its uid drop, again refusing any symlink.

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path {0:?} leaves the workspace ('..' is not allowed)")]
    ParentComponent(String),
    #[error("path {0:?} is outside the workspace; use a relative path or one under /workspace/")]
    OutsideWorkspace(String),
    #[error("path contains a NUL byte")]
    Nul,
    #[error("path is empty")]
    Empty,
    #[error("path is longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
}

/// Longest path accepted (Linux's PATH_MAX).
pub const MAX_PATH_BYTES: usize = 4096;

/// A path inside the workspace, relative to its root, without `.` components or repeated
/// slashes. The empty string is the workspace root itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspacePath(String);

impl WorkspacePath {
    /// Relative form, as the box's file operations take it (`""` for the root).
    pub fn relative(&self) -> &str {
        &self.0
    }

    /// Absolute form inside the box (`/workspace/...`).
    pub fn absolute(&self) -> String {
        if self.0.is_empty() {
            "/workspace".to_string()
        } else {
            format!("/workspace/{}", self.0)
        }
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The last component (empty for the root).
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or_default()
    }
}

/// Resolves a caller's path to a [`WorkspacePath`], or says why it is refused.
pub fn resolve(path: &str) -> Result<WorkspacePath, PathError> {
    if path.contains('\0') {
        return Err(PathError::Nul);
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    if path.trim().is_empty() {
        return Err(PathError::Empty);
    }
    let rest = if let Some(abs) = path.strip_prefix('/') {
        let abs = abs.trim_start_matches('/');
        match abs.strip_prefix("workspace") {
            Some("") => "",
            Some(r) if r.starts_with('/') => r,
            _ => return Err(PathError::OutsideWorkspace(path.to_string())),
        }
    } else {
        path
    };
    let mut parts = Vec::new();
    for part in rest.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(PathError::ParentComponent(path.to_string())),
            p => parts.push(p),
        }
    }
    Ok(WorkspacePath(parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_relative_and_workspace_paths() {
        assert_eq!(resolve("a/b.txt").unwrap().relative(), "a/b.txt");
        assert_eq!(
            resolve("/workspace/a//./b.txt").unwrap().relative(),
            "a/b.txt"
        );
        assert_eq!(resolve("/workspace").unwrap().relative(), "");
        assert_eq!(resolve("/workspace/").unwrap().absolute(), "/workspace");
        assert_eq!(resolve(".").unwrap().relative(), "");
        assert_eq!(resolve("./x").unwrap().absolute(), "/workspace/x");
    }

    #[test]
    fn refuses_everything_else() {
        assert!(matches!(
            resolve("../etc/passwd"),
            Err(PathError::ParentComponent(_))
        ));
        assert!(matches!(
            resolve("a/../../b"),
            Err(PathError::ParentComponent(_))
        ));
        assert!(matches!(
            resolve("/workspace/../etc"),
            Err(PathError::ParentComponent(_))
        ));
        assert!(matches!(
            resolve("/etc/passwd"),
            Err(PathError::OutsideWorkspace(_))
        ));
        assert!(matches!(
            resolve("/workspacex/a"),
            Err(PathError::OutsideWorkspace(_))
        ));
        assert!(matches!(resolve("a\0b"), Err(PathError::Nul)));
        assert!(matches!(resolve(""), Err(PathError::Empty)));
        assert!(resolve(&"a/".repeat(3000)).is_err());
    }

    proptest! {
        /// No input ever resolves to a path with a `..` component or outside the workspace.
        #[test]
        fn never_leaves_the_workspace(path in ".{0,64}", parts in proptest::collection::vec("(\\.\\.|\\.|/|a|workspace|[^/]{1,3})", 0..12)) {
            for candidate in [path.clone(), parts.join("/"), format!("/{}", parts.join("/"))] {
                if let Ok(p) = resolve(&candidate) {
                    prop_assert!(!p.relative().split('/').any(|c| c == ".." || c == "."));
                    prop_assert!(!p.relative().starts_with('/'));
                    prop_assert!(!p.relative().contains("//"));
                    prop_assert!(p.absolute().starts_with("/workspace"));
                }
            }
        }
    }
}
