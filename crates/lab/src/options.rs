//! How a lab is started: its options, and where its start reports progress.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How a lab is started.
#[derive(Debug, Clone)]
pub struct Options {
    /// The lab's directory (layout in the crate's documentation).
    pub dir: PathBuf,
    /// The `pcipool` program: it goes into the guests' initramfs, runs the controller and is the relay.
    pub pcipool: PathBuf,
    /// The controller's port on 127.0.0.1 (0: a free one).
    pub controller_port: u16,
    /// Seconds without a heartbeat before the controller counts a host's agent as lost.
    pub agent_timeout: Duration,
    /// How often the agents heartbeat.
    pub heartbeat: Duration,
    /// How long a guest may take to boot.
    pub boot_within: Duration,
    /// How long the agents may take to register once the guests run.
    pub register_within: Duration,
    /// Told each step of the start as it happens (the kernel fetched, each guest booted, the agents
    /// registered): what `pcipool lab up` shows while it waits.
    pub progress: Progress,
}

/// Something told a line of progress.
type Say = dyn Fn(&str) + Send + Sync;

/// Where a lab's start reports its steps (nowhere by default).
#[derive(Clone, Default)]
pub struct Progress(Option<std::sync::Arc<Say>>);

impl Progress {
    /// Steps go to `say`.
    pub fn to(say: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self(Some(std::sync::Arc::new(say)))
    }

    pub(crate) fn say(&self, line: &str) {
        if let Some(say) = &self.0 {
            say(line);
        }
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Progress(on)"
        } else {
            "Progress(off)"
        })
    }
}

impl Options {
    /// Defaults for a lab in `dir` made of `pcipool`.
    pub fn new(dir: &Path, pcipool: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            pcipool: pcipool.to_path_buf(),
            controller_port: 0,
            agent_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_millis(500),
            boot_within: Duration::from_secs(120),
            register_within: Duration::from_secs(90),
            progress: Progress::default(),
        }
    }
}
