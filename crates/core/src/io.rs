//! Crash-safe file output, shared by every crate that writes files (parameters, results, plots).

use std::fs;
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one, never a
/// torn one: the data goes to a temporary file in the same folder, is flushed to disk, and is
/// renamed over `path`.
///
/// # Errors
/// Any I/O error of creating, writing, syncing or renaming the temporary file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_replaces_atomically() {
        let dir = std::env::temp_dir().join(format!("polysketch-io-{}", std::process::id()));
        let path = dir.join("a.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let leftovers = fs::read_dir(&dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name() != "a.txt")
            .count();
        assert_eq!(leftovers, 0, "no temporary file is left behind");
        fs::remove_dir_all(&dir).unwrap();
    }
}
