//! What every command gets: the global flags, the working directory and the progress printer.

use crate::progress::Progress;
use crate::project::Project;
use anyhow::Result;
use std::path::PathBuf;

pub struct Global {
    pub cwd: PathBuf,
    /// `--config FILE`
    pub config: Option<PathBuf>,
    /// `-v`
    pub verbose: bool,
    /// `--insecure HOST` (repeatable)
    pub insecure: Vec<String>,
    pub progress: Progress,
}

impl Global {
    /// The project of the working directory (or `--config`).
    pub fn project(&self) -> Result<Project> {
        Project::load(&self.cwd, self.config.as_deref())
    }
}

/// `--platform` values (repeatable), each checked, none twice.
pub fn platforms(given: &[String]) -> Result<Vec<crate::image::Platform>> {
    crate::image::Platform::parse_list(given, |p| format!("--platform `{p}`"))
}
