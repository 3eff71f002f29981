//! The last-known-good file: every snapshot a data plane accepts, so it can start and serve
//! while its control plane is unreachable.
//!
//! `DATA_DIR/last-known-good.json` holds the [`ControlSnapshot`] as the control plane sent
//! it (config text, installation secret, key digests). It is written atomically: a
//! temporary file in the same directory (mode 0600: it holds key material), written,
//! fsynced, renamed over the old one, then the directory fsynced, so a crash at any point
//! leaves either the old file or the new one, never a torn one. Reading it back checks the
//! same things as a snapshot from the network ([`ControlSnapshot::verify`]).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tollgate_admin_api::ControlSnapshot;

/// The file's name in the data directory.
pub(crate) const FILE_NAME: &str = "last-known-good.json";

/// `dir/last-known-good.json`.
pub(crate) fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Reads the file: `Ok(None)` when there is none; `Err` when it cannot be read, parsed or
/// verified.
pub(crate) fn load(path: &Path) -> Result<Option<ControlSnapshot>, String> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let snap: ControlSnapshot = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not a snapshot: {e}", path.display()))?;
    snap.verify()
        .map_err(|e| format!("{} fails its checks: {e}", path.display()))?;
    Ok(Some(snap))
}

/// Writes `snap` to `path` atomically (temporary file, fsync, rename, directory fsync),
/// mode 0600.
pub(crate) fn store(path: &Path, snap: &ControlSnapshot) -> Result<(), String> {
    let dir = path
        .parent()
        .ok_or_else(|| format!("{} has no directory", path.display()))?;
    let bytes = serde_json::to_vec(snap).map_err(|e| format!("cannot encode: {e}"))?;
    let tmp = dir.join(format!(".{FILE_NAME}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // An older temporary file of the same name may have had another mode.
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(revision: u64) -> ControlSnapshot {
        ControlSnapshot::new(
            revision,
            format!("version: 1\n# {revision}\n"),
            &[7; 32],
            Vec::new(),
        )
    }

    #[test]
    fn round_trip_atomic_and_private() {
        let dir = tempfile_dir();
        let path = path_in(&dir);
        assert_eq!(load(&path).unwrap(), None);
        store(&path, &snapshot(3)).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load(&path).unwrap().unwrap().revision, 3);
        store(&path, &snapshot(4)).unwrap();
        assert_eq!(load(&path).unwrap().unwrap().revision, 4);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(FILE_NAME)]);
        // A damaged file is refused, not half-used.
        let mut text = fs::read_to_string(&path).unwrap();
        text = text.replace("# 4", "# 5");
        fs::write(&path, text).unwrap();
        assert!(load(&path).unwrap_err().contains("fails its checks"));
        fs::write(&path, "{").unwrap();
        assert!(load(&path).unwrap_err().contains("not a snapshot"));
        fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-lkg-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
