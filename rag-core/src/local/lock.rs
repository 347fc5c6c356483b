//! [`DirLock`]: one writer per directory across processes (an advisory `flock`).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// An exclusive advisory lock on a directory, held until dropped (or the process ends: the
/// kernel releases it, so a killed writer never leaves a stale lock).
///
/// The lock is `flock` on `<dir>/.lock`, which holds the holder's pid so that a second writer's
/// error can name it. Readers take no lock; the writers they share a directory with keep every
/// file they read whole (atomic renames). Two handles in one process conflict like two
/// processes: each writer of a directory holds exactly one.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock of `dir` (created if missing) for `what` (e.g. `"the index in DIR"`), or
    /// fails at once with [`Error::Unavailable`] saying which process holds it.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let held = rag_core::local::DirLock::acquire(dir.path(), "the work directory")?;
    /// let err = rag_core::local::DirLock::acquire(dir.path(), "the work directory").unwrap_err();
    /// assert!(err.to_string().contains("in use by pid"), "{err}");
    /// drop(held);
    /// rag_core::local::DirLock::acquire(dir.path(), "the work directory")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire(dir: &Path, what: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(e, format!("creating {}", dir.display())))?;
        let path = dir.join(".lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(e, format!("opening {}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    "another process".to_string()
                } else {
                    format!("pid {holder}")
                };
                return Err(Error::Unavailable {
                    message: format!(
                        "{what} is in use by {who} (lock {}): wait for it to finish, or use \
                         another directory",
                        path.display()
                    ),
                    source: None,
                });
            }
            Err(TryLockError::Error(e)) => {
                return Err(Error::io(e, format!("locking {}", path.display())));
            }
        }
        let pid = std::process::id().to_string();
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(pid.as_bytes()))
            .map_err(|e| Error::io(e, format!("writing {}", path.display())))?;
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_told_who_holds_the_lock_until_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path(), "the index").unwrap();
        let err = DirLock::acquire(dir.path(), "the index").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!(
                "the index is in use by pid {}",
                std::process::id()
            )),
            "{msg}"
        );
        assert!(err.is_retryable(), "a held lock is a wait, not a bad input");
        drop(held);
        let again = DirLock::acquire(dir.path(), "the index").unwrap();
        assert_eq!(again.path(), dir.path().join(".lock"));
    }

    #[test]
    fn a_killed_holder_leaves_no_lock() {
        // A child process takes the lock and is killed; the kernel releases it.
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join(".lock");
        // One process (the shell execs sleep), so killing it closes the locked descriptor.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "exec 9>>\"$0\"; flock 9; exec sleep 30"])
            .arg(&lock)
            .spawn()
            .expect("sh and flock(1) from util-linux");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while DirLock::acquire(dir.path(), "x").is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "the child never took the lock"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        DirLock::acquire(dir.path(), "x").expect("released when its holder died");
    }
}
