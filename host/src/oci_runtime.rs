//! The OCI runtime a container is handed to (runc, crun, or another one
//! with their command line), and the one way it is looked up by name.

use std::path::PathBuf;

/// Where a runtime is looked for after PATH: engines do not always pass
/// PATH on (podman's cleanup `delete` runs without one).
pub const SYSTEM_PATH: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// The files named `name` in PATH's directories, then in
/// [`SYSTEM_PATH`]'s, in that order.
pub(crate) fn on_path(name: &str) -> impl Iterator<Item = PathBuf> + '_ {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(SYSTEM_PATH.iter().map(PathBuf::from))
        .collect();
    dirs.into_iter().map(move |dir| dir.join(name)).filter(|p| p.is_file())
}

/// Why an OCI runtime could not be found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FindError {
    #[error("runtime {0} does not exist")]
    Missing(String),
    #[error("runtime {0} is not on PATH or in the system directories (apt-get install {0})")]
    NotOnPath(String),
}

/// An OCI runtime `specwright run` starts containers with.
#[derive(Debug, Clone)]
pub struct OciRuntime {
    pub path: PathBuf,
}

impl OciRuntime {
    /// `crun`, `runc` (looked up on PATH, then in the system directories, `SYSTEM_PATH`), or a
    /// path to a runtime binary.
    pub fn find(name: &str) -> Result<OciRuntime, FindError> {
        if name.contains('/') {
            let path = PathBuf::from(name);
            return if path.exists() {
                Ok(OciRuntime { path })
            } else {
                Err(FindError::Missing(name.to_string()))
            };
        }
        on_path(name)
            .next()
            .map(|path| OciRuntime { path })
            .ok_or_else(|| FindError::NotOnPath(name.to_string()))
    }

    /// The runtime's file name (`crun`, `runc`).
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runtime_is_found_by_path_or_name_or_named_missing() {
        assert_eq!(OciRuntime::find("/bin/sh").unwrap().name(), "sh");
        assert!(OciRuntime::find("sh").unwrap().path.is_file());
        let err = OciRuntime::find("/nonexistent/crun").unwrap_err().to_string();
        assert!(err.contains("/nonexistent/crun"), "{err}");
        let err = OciRuntime::find("no-such-runtime-xyz").unwrap_err().to_string();
        assert!(err.contains("apt-get install no-such-runtime-xyz"), "{err}");
    }
}
