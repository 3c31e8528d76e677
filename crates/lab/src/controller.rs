//! The controller of the lab: `pcipool server` as a process of its own, which the lab (or a test)
//! may SIGKILL and start again on the same store.

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::LabError;

/// A `pcipool server` process.
#[derive(Debug)]
pub(crate) struct ControllerProcess {
    program: PathBuf,
    args: Vec<String>,
    dir: PathBuf,
    child: Option<Child>,
}

impl ControllerProcess {
    /// The process `program server ARGS`, logging into `dir/server.log`; not started yet.
    pub(crate) fn new(program: &Path, args: Vec<String>, dir: &Path) -> Self {
        Self {
            program: program.to_path_buf(),
            args,
            dir: dir.to_path_buf(),
            child: None,
        }
    }

    /// Starts it and waits (up to `within`) for its banner: it listens from then on.
    pub(crate) fn start(&mut self, within: Duration) -> Result<(), LabError> {
        self.kill();
        std::fs::create_dir_all(&self.dir).map_err(LabError::io("creating controller/"))?;
        let log_path = self.dir.join("server.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(LabError::io("opening controller/server.log"))?;
        let stderr = log
            .try_clone()
            .map_err(LabError::io("opening controller/server.log"))?;
        let mut child = Command::new(&self.program)
            .arg("server")
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| LabError::Controller(format!("{}: {e}", self.program.display())))?;
        std::fs::write(self.dir.join("server.pid"), child.id().to_string())
            .map_err(LabError::io("writing controller/server.pid"))?;
        let Some(stdout) = child.stdout.take() else {
            return Err(LabError::Controller("no stdout pipe".into()));
        };
        // The banner comes on stdout; every line also goes to the log, for as long as it runs.
        let (banner_tx, banner_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut log = log;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // The log is for a person; losing a line loses no result.
                let _lost = writeln!(log, "{line}");
                if line.contains("controller at http://") {
                    let _nobody_waits = banner_tx.send(());
                }
            }
        });
        self.child = Some(child);
        if banner_rx.recv_timeout(within).is_ok() {
            return Ok(());
        }
        self.kill();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        Err(LabError::Controller(format!(
            "no banner within {within:?}; {}:\n{}",
            log_path.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )))
    }

    /// Whether it runs.
    pub(crate) fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Its process id while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a machine that loses power.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Gone already is fine.
            let _gone = c.kill();
            let _reaped = c.wait();
        }
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
