//! Files an operator names on the command line (host facts, policies,
//! their settings): read whole, but never more than a bound, so that a
//! device such as /dev/zero is an error, not the end of the host's memory.
//! A pipe stays readable (`--host-facts <(...)`).

use std::io::Read;
use std::path::Path;

/// The most bytes of a host facts file.
pub const MAX_FACTS_BYTES: u64 = 1 << 20;
/// The most bytes of a policy's settings file.
pub const MAX_SETTINGS_BYTES: u64 = 4 << 20;
/// The most bytes of a policy component (runtimes for other languages
/// make components of tens of MiB).
pub const MAX_POLICY_BYTES: u64 = 256 << 20;
/// The most bytes of the host's /etc/resolv.conf.
pub const MAX_RESOLV_CONF_BYTES: u64 = 1 << 20;

/// All of `reader`, but an error (`InvalidData`, naming the bound) past
/// `max` bytes, having read no more than one byte beyond it.
pub fn read_to_bound(reader: impl Read, max: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("more than {max} bytes"),
        ));
    }
    Ok(bytes)
}

/// `path`'s bytes, within `max` ([`read_to_bound`]).
pub fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    read_to_bound(std::fs::File::open(path)?, max)
}

/// [`read_bounded`], as UTF-8 text.
pub fn read_bounded_text(path: &Path, max: u64) -> std::io::Result<String> {
    String::from_utf8(read_bounded(path, max)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))
}

/// A file whose contents decide what containers may do (the wrapper's
/// configuration, its policies and their settings, the real runtime):
/// opened without blocking (a FIFO does not hang the reader), then
/// checked on the opened descriptor, so that what is checked is what is
/// read: a regular file, owned by root or by this process's user, that no
/// one else may write.
pub fn open_trusted(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)?;
    let meta = file.metadata()?;
    let untrusted = |why: String| {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("not trusted: {why}"),
        ))
    };
    if !meta.file_type().is_file() {
        return untrusted("not a regular file".to_string());
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != euid {
        return untrusted(format!("owned by uid {}, not root or {euid}", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return untrusted(format!("mode {:o} lets others write it", meta.mode() & 0o7777));
    }
    Ok(file)
}

/// [`open_trusted`], then its bytes within `max` ([`read_to_bound`]).
pub fn read_trusted(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    read_to_bound(open_trusted(path)?, max)
}

/// [`read_trusted`], as UTF-8 text.
pub fn read_trusted_text(path: &Path, max: u64) -> std::io::Result<String> {
    String::from_utf8(read_trusted(path, max)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_past_its_bound_is_an_error_and_a_device_too() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"0123456789").unwrap();
        assert_eq!(read_bounded(&file, 10).unwrap(), b"0123456789");
        assert!(read_bounded(&file, 9)
            .unwrap_err()
            .to_string()
            .contains("more than 9 bytes"));
        let err = read_bounded(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(err.to_string().contains("more than 1048576 bytes"), "{err}");
        std::fs::write(&file, [0xff, 0xfe]).unwrap();
        assert!(read_bounded_text(&file, 10).unwrap_err().to_string().contains("UTF-8"));
    }

    #[test]
    fn a_trusted_file_is_a_regular_file_no_one_else_owns_or_writes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.wasm");
        std::fs::write(&file, b"bytes").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_trusted(&file, 10).unwrap(), b"bytes");
        for mode in [0o666, 0o664, 0o646] {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = read_trusted(&file, 10).unwrap_err().to_string();
            assert!(
                err.contains("not trusted") && err.contains("lets others write"),
                "{err}"
            );
        }
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        nix::unistd::chown(&file, Some(nix::unistd::Uid::from_raw(4242)), None).unwrap();
        let err = read_trusted(&file, 10).unwrap_err().to_string();
        assert!(err.contains("owned by uid 4242"), "{err}");
        // A FIFO neither hangs the reader nor is read.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = read_trusted(&fifo, 10).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        assert!(read_trusted(Path::new("/dev/zero"), 10).is_err());
    }
}
