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
    /// The hardware's view: where each drive is, each guest's free slots.
    Fabric,
    KillController,
    StartController,
    KillAgent {
        node: String,
    },
    StartAgent {
        node: String,
    },
    Link {
        node: String,
        up: bool,
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
    /// The hardware's view.
    Fabric(FabricView),
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
    /// The file holding a tenant's token (tenant `tenant`).
    pub tenant_token_file: PathBuf,
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

/// Where the lendable drives are and what room the guests have, as QEMU says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FabricView {
    /// Every lendable drive.
    pub drives: Vec<DriveView>,
    /// Each guest's free hot-plug slots (None: its QEMU does not run).
    pub free_slots: std::collections::BTreeMap<NodeId, Option<usize>>,
}

/// Where one drive is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DriveView {
    /// Its fabric device id.
    pub fdid: Fdid,
    /// The guest whose QEMU holds its image (None: no guest does).
    pub holder: Option<NodeId>,
    /// The guests whose PCI tree has it.
    pub in_pci_tree: Vec<NodeId>,
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
        Ok(Request::Fabric) => match lab.fabric_view() {
            Ok(view) => Answer::Fabric(view),
            Err(e) => Answer::failed(&e),
        },
        Ok(Request::KillController) => {
            lab.kill_controller();
            Answer::Done
        }
        Ok(Request::StartController) => match lab.restart_controller() {
            Ok(()) => Answer::Done,
            Err(e) => Answer::failed(&e),
        },
        Ok(Request::KillAgent { node }) => on_host(&node, |n| lab.kill_agent(n)),
        Ok(Request::StartAgent { node }) => on_host(&node, |n| lab.start_agent_again(n)),
        Ok(Request::Link { node, up }) => on_host(&node, |n| lab.set_link(n, up)),
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

/// A client of a running lab's control socket, for programs that drive the lab from outside (the
/// validation suites' lab target). Each call is one request and its answer; the lab's refusals come
/// back as [`LabError`]s.
#[derive(Debug, Clone)]
pub struct LabClient {
    dir: PathBuf,
}

/// How long a host may take to boot again and register; other requests answer sooner.
const BOOT_WITHIN: Duration = Duration::from_secs(300);
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

impl LabClient {
    /// A client of the lab in `dir` (nothing is asked yet).
    #[must_use]
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    fn ask(&self, request: &Request, within: Duration) -> Result<Answer, LabError> {
        match ask(&self.dir, request, within)? {
            Answer::NoSuchHost(node) => Err(LabError::NoSuchHost(node)),
            Answer::Error(e) => Err(LabError::Control(e)),
            other => Ok(other),
        }
    }

    fn done(&self, request: &Request, within: Duration) -> Result<(), LabError> {
        match self.ask(request, within)? {
            Answer::Done => Ok(()),
            other => Err(LabError::Control(format!("unexpected answer {other:?}"))),
        }
    }

    /// The lab's state.
    ///
    /// # Errors
    /// No lab runs there, or it answers something else.
    pub fn status(&self) -> Result<LabStatus, LabError> {
        match self.ask(&Request::Status, ANSWER_WITHIN)? {
            Answer::Status(s) => Ok(s),
            other => Err(LabError::Control(format!("unexpected answer {other:?}"))),
        }
    }

    /// The hardware's view.
    ///
    /// # Errors
    /// No lab runs there; QEMU could not be asked.
    pub fn fabric(&self) -> Result<FabricView, LabError> {
        match self.ask(&Request::Fabric, ANSWER_WITHIN)? {
            Answer::Fabric(v) => Ok(v),
            other => Err(LabError::Control(format!("unexpected answer {other:?}"))),
        }
    }

    /// Runs `command` in `node`'s shell: (exit status, output).
    ///
    /// # Errors
    /// No lab runs there; no such host; the guest did not answer in time.
    pub fn exec(
        &self,
        node: NodeId,
        command: &str,
        within: Duration,
    ) -> Result<(i32, String), LabError> {
        let request = Request::Exec {
            node: node.to_string(),
            command: command.to_owned(),
            timeout_secs: within.as_secs().max(1),
        };
        match self.ask(&request, within + Duration::from_secs(5))? {
            Answer::Ran { status, output } => Ok((status, output)),
            other => Err(LabError::Control(format!("unexpected answer {other:?}"))),
        }
    }

    /// Kills `node`'s QEMU (the host loses power).
    ///
    /// # Errors
    /// No lab runs there; no such host.
    pub fn kill_host(&self, node: NodeId) -> Result<(), LabError> {
        self.done(
            &Request::Kill {
                node: node.to_string(),
            },
            ANSWER_WITHIN,
        )
    }

    /// Boots `node` again and waits for its agent.
    ///
    /// # Errors
    /// No lab runs there; no such host; it does not come up.
    pub fn start_host(&self, node: NodeId) -> Result<(), LabError> {
        self.done(
            &Request::Start {
                node: node.to_string(),
            },
            BOOT_WITHIN,
        )
    }

    /// SIGKILLs the controller.
    ///
    /// # Errors
    /// No lab runs there.
    pub fn kill_controller(&self) -> Result<(), LabError> {
        self.done(&Request::KillController, ANSWER_WITHIN)
    }

    /// Starts the controller again on its store.
    ///
    /// # Errors
    /// No lab runs there; it does not start.
    pub fn start_controller(&self) -> Result<(), LabError> {
        self.done(&Request::StartController, ANSWER_WITHIN)
    }

    /// SIGKILLs `node`'s agent.
    ///
    /// # Errors
    /// No lab runs there; no such host; no agent runs there.
    pub fn kill_agent(&self, node: NodeId) -> Result<(), LabError> {
        self.done(
            &Request::KillAgent {
                node: node.to_string(),
            },
            ANSWER_WITHIN,
        )
    }

    /// Starts `node`'s agent again and waits until it is up.
    ///
    /// # Errors
    /// No lab runs there; no such host; the agent does not come up.
    pub fn start_agent(&self, node: NodeId) -> Result<(), LabError> {
        self.done(
            &Request::StartAgent {
                node: node.to_string(),
            },
            BOOT_WITHIN,
        )
    }

    /// Cuts or restores `node`'s network link.
    ///
    /// # Errors
    /// No lab runs there; no such host; QEMU refuses.
    pub fn set_link(&self, node: NodeId, up: bool) -> Result<(), LabError> {
        self.done(
            &Request::Link {
                node: node.to_string(),
                up,
            },
            ANSWER_WITHIN,
        )
    }
}
