//! `pcipool lab up|status|exec|down`: the arguments, and what each does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::control::{self, ControlServer, Request};
use crate::{Answer, Lab, LabError, LabStatus, Options};

/// The lab's directory.
#[derive(Debug, Clone, clap::Args)]
pub struct DirArg {
    /// The lab's directory: its control socket, controller store, VM files and drive images
    /// [default: $TMPDIR/pcipool-lab].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

impl DirArg {
    fn path(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(crate::default_dir)
    }
}

/// `pcipool lab`.
#[derive(Debug, clap::Subcommand)]
pub enum LabCommand {
    /// Boot the lab's Linux guests under QEMU, start its controller, its QEMU fabric manager and an
    /// agent in each guest; print the controller's URL and token; run until SIGINT, SIGTERM or
    /// `pcipool lab down`.
    Up {
        /// The lab description (TOML) [default: the shipped 3-host lab, labs/vm-3.toml].
        #[arg(long, value_name = "FILE")]
        lab: Option<PathBuf>,
        /// The lab's directory.
        #[command(flatten)]
        dir: DirArg,
        /// The controller's port on 127.0.0.1.
        #[arg(long, default_value_t = 7080)]
        port: u16,
        /// Seconds without a heartbeat before the controller counts a guest's agent lost (its
        /// leases fenced, its devices `lost`).
        #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
        agent_timeout: u64,
    },
    /// The running lab: the controller, each guest's QEMU, and where each drive is (asked of QEMU).
    Status {
        /// The lab's directory.
        #[command(flatten)]
        dir: DirArg,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run a command in a guest with its shell; prints its output and exits with its exit status.
    Exec {
        /// The lab's directory.
        #[command(flatten)]
        dir: DirArg,
        /// The guest (n1, ...).
        node: String,
        /// Seconds the command may take.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// The command (its words are joined with spaces for the guest's shell).
        #[arg(last = true, required = true, num_args = 1..)]
        command: Vec<String>,
    },
    /// SIGKILL a guest's QEMU, as a host that loses power (a failure drill).
    Kill {
        /// The lab's directory.
        #[command(flatten)]
        dir: DirArg,
        /// The guest (n1, ...).
        node: String,
    },
    /// Boot a killed guest again with the same machine and images, and start its agent; returns once
    /// every agent is up.
    Start {
        /// The lab's directory.
        #[command(flatten)]
        dir: DirArg,
        /// The guest (n1, ...).
        node: String,
    },
    /// Stop the running lab: the agents, guests, fabric manager and controller. Drive images stay.
    Down {
        /// The lab's directory.
        #[command(flatten)]
        dir: DirArg,
    },
}

/// Runs `command`; `pcipool` is the program that goes into the guests. Returns the exit code.
///
/// # Errors
/// What [`LabError`] says.
pub fn run(command: LabCommand, pcipool: &Path, out: &mut dyn Write) -> Result<u8, LabError> {
    let written = LabError::io("writing to stdout");
    match command {
        LabCommand::Up {
            lab,
            dir,
            port,
            agent_timeout,
        } => {
            let text = match lab {
                Some(file) => std::fs::read_to_string(&file)
                    .map_err(LabError::io(format!("reading {}", file.display())))?,
                None => crate::description::VM_3.to_owned(),
            };
            let mut opts = Options::new(&dir.path(), pcipool);
            opts.controller_port = port;
            opts.agent_timeout = Duration::from_secs(agent_timeout);
            // The start takes seconds to minutes: each step on stderr as it happens.
            opts.progress = crate::Progress::to(|line| eprintln!("lab up: {line}"));
            up(&text, &opts, out)?;
            Ok(0)
        }
        LabCommand::Status { dir, json } => {
            let Answer::Status(status) = expect(control::ask(
                &dir.path(),
                &Request::Status,
                Duration::from_secs(60),
            )?)?
            else {
                return Err(LabError::Control(
                    "the lab did not answer with its status".into(),
                ));
            };
            let text = if json {
                serde_json::to_string_pretty(&status)
                    .map_err(|e| LabError::Control(e.to_string()))?
            } else {
                status_text(&status)
            };
            writeln!(out, "{text}").map_err(written)?;
            Ok(0)
        }
        LabCommand::Exec {
            dir,
            node,
            timeout,
            command,
        } => {
            let request = Request::Exec {
                node,
                command: command.join(" "),
                timeout_secs: timeout,
            };
            let within = Duration::from_secs(timeout + 10);
            match expect(control::ask(&dir.path(), &request, within)?)? {
                Answer::Ran { status, output } => {
                    write!(out, "{output}").map_err(written)?;
                    Ok(u8::try_from(status.clamp(0, 255)).unwrap_or(u8::MAX))
                }
                other => Err(LabError::Control(format!("unexpected answer {other:?}"))),
            }
        }
        LabCommand::Kill { dir, node } => {
            expect(control::ask(
                &dir.path(),
                &Request::Kill { node: node.clone() },
                Duration::from_secs(30),
            )?)?;
            writeln!(out, "{node} killed").map_err(written)?;
            Ok(0)
        }
        LabCommand::Start { dir, node } => {
            expect(control::ask(
                &dir.path(),
                &Request::Start { node: node.clone() },
                Duration::from_secs(300),
            )?)?;
            writeln!(out, "{node} booted again; its agent is up").map_err(written)?;
            Ok(0)
        }
        LabCommand::Down { dir } => {
            down(&dir.path(), out)?;
            Ok(0)
        }
    }
}

fn expect(answer: Answer) -> Result<Answer, LabError> {
    match answer {
        Answer::Error(e) => Err(LabError::Control(e)),
        Answer::NoSuchHost(node) => Err(LabError::NoSuchHost(node)),
        other => Ok(other),
    }
}

/// `lab up`: boots the lab, prints where it serves, and runs until a signal or `lab down`.
fn up(text: &str, opts: &Options, out: &mut dyn Write) -> Result<(), LabError> {
    let socket = crate::control_socket(&opts.dir);
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        return Err(LabError::AlreadyRunning(opts.dir.clone()));
    }
    // A socket nobody answers on is left from a lab that died.
    let _stale_removed = std::fs::remove_file(&socket);
    let started = Instant::now();
    let lab = Arc::new(Lab::up(text, opts)?);
    let (down_tx, mut down_rx) = tokio::sync::mpsc::unbounded_channel();
    let server = ControlServer::start(&lab, down_tx)?;
    let nodes: Vec<String> = lab.nodes().iter().map(ToString::to_string).collect();
    let borrower = nodes.last().cloned().unwrap_or_default();
    let lines = [
        format!(
            "lab up in {}: {} guests ({}) in {:.1} s",
            lab.dir().display(),
            nodes.len(),
            nodes.join(" "),
            started.elapsed().as_secs_f64()
        ),
        format!("controller at {}", lab.url()),
        format!(
            "admin token: {} (also in {})",
            lab.admin_token(),
            lab.dir().join("controller/admin.token").display()
        ),
        "try, in another shell:".into(),
        format!(
            "  export PCIPOOL_URL={} PCIPOOL_TOKEN={}",
            lab.url(),
            lab.admin_token()
        ),
        format!("  pcipool borrow --class nvme --host {borrower}"),
        format!("  pcipool lab exec {borrower} -- ls /sys/class/nvme"),
        "  pcipool lease list; pcipool release LEASE".into(),
        "  pcipool lab status; pcipool lab down".into(),
    ];
    for line in lines {
        writeln!(out, "{line}").map_err(LabError::io("writing to stdout"))?;
    }
    out.flush().map_err(LabError::io("writing to stdout"))?;
    lab.runtime().block_on(async {
        tokio::select! {
            () = pcipool_serve::shutdown_signal() => {}
            _ = down_rx.recv() => {}
        }
    });
    drop(server);
    drop(lab);
    writeln!(out, "lab down").map_err(LabError::io("writing to stdout"))?;
    Ok(())
}

/// `lab down`: asks the lab to stop and waits until it has; a lab whose process died is cleaned up
/// by killing the processes its files name (only those whose command line names its directory).
fn down(dir: &Path, out: &mut dyn Write) -> Result<(), LabError> {
    let socket = crate::control_socket(dir);
    match control::ask(dir, &Request::Down, Duration::from_secs(10)) {
        Ok(answer) => {
            expect(answer)?;
            let asked = Instant::now();
            while socket.exists() && asked.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(100));
            }
            if socket.exists() {
                return Err(LabError::Control(format!(
                    "the lab in {} did not stop within 60 s",
                    dir.display()
                )));
            }
            writeln!(out, "lab in {} stopped", dir.display())
                .map_err(LabError::io("writing to stdout"))?;
            Ok(())
        }
        Err(LabError::NotRunning(_)) => {
            let killed = kill_leftovers(dir);
            let _stale_removed = std::fs::remove_file(&socket);
            if killed.is_empty() {
                return Err(LabError::NotRunning(dir.to_path_buf()));
            }
            writeln!(
                out,
                "no lab answered in {}; killed its leftover processes {killed:?}",
                dir.display()
            )
            .map_err(LabError::io("writing to stdout"))?;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Kills the QEMUs and the controller a dead lab left, by the pid files in `dir`.
fn kill_leftovers(dir: &Path) -> Vec<u32> {
    let mut pid_files = vec![dir.join("controller/server.pid")];
    if let Ok(hosts) = std::fs::read_dir(dir.join("hosts")) {
        pid_files.extend(hosts.flatten().map(|h| h.path().join("qemu.pid")));
    }
    let dir_text = dir.display().to_string();
    pid_files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok()?.trim().parse::<u32>().ok())
        .filter(|pid| {
            // Never a process that is not this lab's: a pid may have been reused.
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&dir_text))
        })
        .filter(|pid| {
            std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect()
}

fn status_text(s: &LabStatus) -> String {
    let controller = s
        .controller_pid
        .map_or_else(|| "NOT RUNNING".to_owned(), |p| format!("pid {p}"));
    let mut text = format!(
        "lab in {}\ncontroller {} ({controller}), admin token in {}\n",
        s.dir.display(),
        s.url,
        s.admin_token_file.display()
    );
    for h in &s.hosts {
        text.push_str(&format!(
            "{}  qemu pid {} {}  agent {}  console {}\n",
            h.node,
            h.qemu_pid,
            if h.running { "running" } else { "STOPPED" },
            h.agent_url,
            h.serial_log.display()
        ));
        for d in &h.drives {
            let fdid = d.fdid.map_or_else(|| "-".to_owned(), |f| f.to_string());
            text.push_str(&format!(
                "    {:<8} {:<18} held by {:<7} {}\n",
                d.serial, fdid, d.held_by, d.state
            ));
        }
    }
    text.trim_end().to_owned()
}
