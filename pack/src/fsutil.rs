//! Atomic output directories: everything is written under a temporary sibling, which is renamed
//! into place only when complete. An error or a panic on the way removes the temporary
//! directory, so a failed command never leaves a partial output behind.

use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// A directory being written; becomes `target` on [`StagedDir::commit`].
#[derive(Debug)]
pub struct StagedDir {
    target: PathBuf,
    staging: PathBuf,
    committed: bool,
}

impl StagedDir {
    /// Starts writing `target`. Fails if `target` exists, unless `overwrite`.
    pub fn create(target: &Path, overwrite: bool) -> Result<StagedDir> {
        if target.exists() && !overwrite {
            return Err(Error::Usage(format!(
                "{} already exists (pass --force to replace it)",
                target.display()
            )));
        }
        let name = target
            .file_name()
            .ok_or_else(|| Error::Usage(format!("{} is not a directory name", target.display())))?;
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).at(&parent)?;
        let staging = parent.join(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).at(&staging)?;
        }
        std::fs::create_dir(&staging).at(&staging)?;
        Ok(StagedDir {
            target: target.to_path_buf(),
            staging,
            committed: false,
        })
    }

    /// Where to write the files.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// Moves the finished directory into place (replacing an old one if allowed at creation).
    pub fn commit(mut self) -> Result<PathBuf> {
        if self.target.exists() {
            let old = self.staging.with_extension("old");
            std::fs::rename(&self.target, &old).at(&self.target)?;
            std::fs::rename(&self.staging, &self.target).at(&self.target)?;
            std::fs::remove_dir_all(&old).at(&old)?;
        } else {
            std::fs::rename(&self.staging, &self.target).at(&self.target)?;
        }
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).at(&tmp)?;
    std::fs::rename(&tmp, path).at(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_stage_leaves_nothing_and_commit_moves() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("out");
        {
            let s = StagedDir::create(&target, false).unwrap();
            std::fs::write(s.path().join("a"), b"x").unwrap();
        }
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
        let s = StagedDir::create(&target, false).unwrap();
        std::fs::write(s.path().join("a"), b"x").unwrap();
        s.commit().unwrap();
        assert!(target.join("a").exists());
        assert!(StagedDir::create(&target, false).is_err());
        let s = StagedDir::create(&target, true).unwrap();
        s.commit().unwrap();
        assert!(!target.join("a").exists());
    }
}
