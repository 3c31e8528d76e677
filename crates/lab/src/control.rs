//! The running lab's control socket (`DIR/lab.sock`): `lab status`, `lab exec` and `lab down` from
//! another shell. One JSON request per connection, one JSON answer.

use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pcipool_fabric::{Fdid, NodeId};
use serde::{Deserialize, Serialize};

use crate::{Lab, LabError};

/// What a client asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Request {
    Status,
    Exec {
        node: String,
        command: String,
        timeout_secs: u64,
    },
    Kill {
        node: String,
    },
    Start {
        node: String,
    },
    Down,
}

/// What the lab answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// The lab's state.
    Status(LabStatus),
    /// A guest command's exit status and output.
    Ran {
        /// Exit status.
        status: i32,
        /// Stdout and stderr.
        output: String,
    },
    /// Done (a guest killed or booted again).
    Done,
    /// The lab is stopping.
    Stopping,
    /// The lab has no such host.
    NoSuchHost(String),
    /// The request failed.
    Error(String),
}

impl Answer {
    /// The answer to a request that failed with `e`.
    fn failed(e: &LabError) -> Self {
        match e {
            LabError::NoSuchHost(node) => Self::NoSuchHost(node.clone()),
            other => Self::Error(other.to_string()),
        }
    }
}

/// The lab's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabStatus {
    /// Its directory.
    pub dir: PathBuf,
    /// The controller's URL.
    pub url: String,
    /// The file holding the controller's admin token.
    pub admin_token_file: PathBuf,
    /// The controller's process id while it runs.
    pub controller_pid: Option<u32>,
    /// The guests.
    pub hosts: Vec<HostStatus>,
}

/// One guest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostStatus {
    /// Its name in the pool.
    pub node: NodeId,
    /// Its QEMU's process id.
    pub qemu_pid: u32,
    /// Whether its QEMU runs.
    pub running: bool,
    /// Its QMP socket.
    pub qmp: PathBuf,
    /// Its console log.
    pub serial_log: PathBuf,
    /// Its agent, as the controller reaches it.
    pub agent_url: String,
    /// Its own drives.
    pub drives: Vec<DriveStatus>,
}

/// One drive of a guest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DriveStatus {
    /// Its NVMe serial.
    pub serial: String,
    /// Its fabric device id (None: it is not lent).
    pub fdid: Option<Fdid>,
    /// The guest whose QEMU holds its image now, as QMP says.
    pub held_by: String,
    /// Its state in the controller.
    pub state: String,
}

/// The control socket's server: one thread accepting, one per connection.
pub(crate) struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    accepting: Option<std::thread::JoinHandle<()>>,
}

impl ControlServer {
    /// Serves `lab` on `DIR/lab.sock`; a `down` request sends on `down`.
    pub(crate) fn start(
        lab: &Arc<Lab>,
        down: tokio::sync::mpsc::UnboundedSender<()>,
    ) -> Result<Self, LabError> {
        let path = crate::control_socket(lab.dir());
        let listener = UnixListener::bind(&path)
            .map_err(LabError::io(format!("binding {}", path.display())))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (lab, stopping) = (Arc::downgrade(lab), stop.clone());
        let accepting = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (Some(lab), down) = (lab.upgrade(), down.clone()) else {
                    break;
                };
                std::thread::spawn(move || {
                    if let Err(e) = answer(&lab, conn, &down) {
                        tracing::warn!(error = %e, "lab control connection");
                    }
                });
            }
        });
        Ok(Self {
            path,
            stop,
            accepting: Some(accepting),
        })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread so that it sees the stop.
        let _woken = UnixStream::connect(&self.path);
        if let Some(t) = self.accepting.take() {
            let _joined = t.join();
        }
        // Gone already is fine.
        let _removed = std::fs::remove_file(&self.path);
    }
}

fn answer(
    lab: &Lab,
    conn: UnixStream,
    down: &tokio::sync::mpsc::UnboundedSender<()>,
) -> std::io::Result<()> {
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Err(e) => Answer::Error(format!("bad request: {e}")),
        Ok(Request::Status) => Answer::Status(lab.status()),
        Ok(Request::Exec {
            node,
            command,
            timeout_secs,
        }) => match node.parse::<NodeId>() {
            Err(_) => Answer::NoSuchHost(node),
            Ok(n) => match lab.exec(n, &command, Duration::from_secs(timeout_secs)) {
                Ok(ran) => Answer::Ran {
                    status: ran.status,
                    output: ran.output,
                },
                Err(e) => Answer::failed(&e),
            },
        },
        Ok(Request::Kill { node }) => on_host(&node, |n| lab.kill_host(n)),
        Ok(Request::Start { node }) => on_host(&node, |n| lab.restart_host(n)),
        Ok(Request::Down) => match down.send(()) {
            Ok(()) => Answer::Stopping,
            Err(_) => Answer::Error("the lab is already stopping".into()),
        },
    };
    let mut text = serde_json::to_string(&reply).map_err(std::io::Error::other)?;
    text.push('\n');
    (&conn).write_all(text.as_bytes())
}

/// Runs `act` on the host named `node`.
fn on_host(node: &str, act: impl FnOnce(NodeId) -> Result<(), LabError>) -> Answer {
    match node.parse::<NodeId>() {
        Err(_) => Answer::NoSuchHost(node.to_owned()),
        Ok(n) => match act(n) {
            Ok(()) => Answer::Done,
            Err(e) => Answer::failed(&e),
        },
    }
}

/// Asks the lab in `dir`, waiting up to `within` for its answer.
pub(crate) fn ask(dir: &Path, request: &Request, within: Duration) -> Result<Answer, LabError> {
    let path = crate::control_socket(dir);
    let conn = UnixStream::connect(&path).map_err(|_| LabError::NotRunning(dir.to_path_buf()))?;
    conn.set_read_timeout(Some(within))
        .map_err(LabError::io("lab control socket"))?;
    let mut text = serde_json::to_string(request).map_err(|e| LabError::Control(e.to_string()))?;
    text.push('\n');
    (&conn)
        .write_all(text.as_bytes())
        .map_err(LabError::io("writing to the lab"))?;
    let mut line = String::new();
    BufReader::new(&conn)
        .read_line(&mut line)
        .map_err(LabError::io("reading the lab's answer"))?;
    serde_json::from_str(&line).map_err(|e| LabError::Control(format!("{e}: {line:?}")))
}
