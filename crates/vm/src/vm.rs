//! One guest: QEMU under software emulation with the console on its stdin/stdout.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::VmError;

/// The guest's machine: memory, PCIe root ports (hot-plug slots) and what sits in them.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Root ports, `rp1`.. at 00:03.0 onwards; devices name them by index.
    pub root_ports: u8,
    /// Extra QEMU arguments (devices, backends), in order.
    pub args: Vec<String>,
}

impl Spec {
    /// A machine with `root_ports` hot-plug root ports and 512 MiB.
    pub fn new(root_ports: u8) -> Self {
        Self {
            memory_mib: 512,
            root_ports,
            args: Vec::new(),
        }
    }

    fn push(&mut self, args: &[String]) {
        self.args.extend_from_slice(args);
    }

    /// The raw `image` as block node `disk-SERIAL`.
    fn blockdev(&mut self, serial: &str, image: &Path) -> String {
        let node = format!("disk-{serial}");
        self.push(&[
            "-blockdev".into(),
            format!(
                "driver=raw,node-name={node},file.driver=file,file.filename={}",
                image.display()
            ),
        ]);
        node
    }

    /// An NVMe drive backed by the raw `image`, in root port `port` (1-based); QEMU ids `dev-SERIAL`
    /// (the device) and `disk-SERIAL` (its block node), as the QEMU fabric names them.
    #[must_use]
    pub fn nvme(mut self, serial: &str, image: &Path, port: u8) -> Self {
        let node = self.blockdev(serial, image);
        self.push(&[
            "-device".into(),
            format!("nvme,id=dev-{serial},serial={serial},drive={node},bus=rp{port}"),
        ]);
        self
    }

    /// An NVMe controller with SR-IOV (`vfs` virtual functions at most) in an NVMe subsystem, its
    /// namespace backed by `image`.
    #[must_use]
    pub fn nvme_sriov(mut self, serial: &str, image: &Path, port: u8, vfs: u8) -> Self {
        let node = self.blockdev(serial, image);
        self.push(&[
            "-device".into(),
            format!("nvme-subsys,id=subsys-{serial},nqn=subsys-{serial}"),
            "-device".into(),
            format!(
                "nvme,id=dev-{serial},serial={serial},bus=rp{port},subsys=subsys-{serial},sriov_max_vfs={vfs},sriov_vq_flexible=8,sriov_vi_flexible=4,msix_qsize=8"
            ),
            "-device".into(),
            format!("nvme-ns,drive={node},nsid=1,shared=false,detached=true"),
        ]);
        self
    }

    /// A virtio NIC on QEMU's restricted user network with forwards: the guest's `guest_addr`
    /// (`10.0.2.100:7070`) runs `relay` on the machine per connection, and the machine's
    /// `127.0.0.1:host_port` reaches the guest's `guest_port`. The guest configures it with
    /// [`GUEST_NET`].
    #[must_use]
    pub fn forwarded_nic(
        mut self,
        port: u8,
        guest_addr: &str,
        relay: &str,
        host_port: u16,
        guest_port: u16,
    ) -> Self {
        self.push(&[
            "-netdev".into(),
            format!(
                "user,id=net0,restrict=on,guestfwd=tcp:{guest_addr}-cmd:{relay},hostfwd=tcp:127.0.0.1:{host_port}-:{guest_port}"
            ),
            "-device".into(),
            format!("virtio-net-pci,netdev=net0,bus=rp{port}"),
        ]);
        self
    }

    /// A virtio NIC on QEMU's user network, restricted so that nothing leaves QEMU.
    #[must_use]
    pub fn nic(mut self, port: u8) -> Self {
        self.push(&[
            "-netdev".into(),
            "user,id=net0,restrict=on".into(),
            "-device".into(),
            format!("virtio-net-pci,netdev=net0,bus=rp{port}"),
        ]);
        self
    }
}

/// The guest's side of QEMU's user network: the address QEMU expects and its gateway as the default
/// route (which makes the NIC one that qualification refuses, as on a real host).
pub const GUEST_NET: &str =
    "ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2";

struct Console {
    text: Mutex<String>,
    grew: Condvar,
}

/// A running guest. Dropping it kills QEMU.
pub struct Vm {
    child: Child,
    stdin: ChildStdin,
    console: Arc<Console>,
    next_id: u64,
    /// How long from starting QEMU to the guest's `/init` answering.
    pub boot_time: Duration,
    /// The VM's directory (QMP socket `qmp.sock`, console log `serial.log`).
    pub dir: PathBuf,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// What a command in the guest gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    /// Its exit status.
    pub status: i32,
    /// Its stdout and stderr, with the kernel's console messages dropped.
    pub output: String,
}

/// A kernel message on the console: `[    2.345678] ...`.
fn is_kernel_line(line: &str) -> bool {
    line.strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
        .is_some_and(|(stamp, _)| {
            let stamp = stamp.trim();
            !stamp.is_empty() && stamp.chars().all(|c| c.is_ascii_digit() || c == '.')
        })
}

impl Vm {
    /// Boots `kernel` with `initramfs` on the machine `spec`, in `dir`, and waits for `/init`.
    ///
    /// # Errors
    /// QEMU does not start, or the guest is not ready within `ready_within`.
    pub fn boot(
        kernel: &Path,
        initramfs: &Path,
        spec: &Spec,
        dir: &Path,
        ready_within: Duration,
    ) -> Result<Self, VmError> {
        std::fs::create_dir_all(dir).map_err(VmError::io("creating the VM directory"))?;
        let mut cmd = Command::new(crate::tools::path_of("qemu-system-x86_64"));
        cmd.args([
            "-accel",
            "tcg",
            "-machine",
            "q35,kernel-irqchip=split",
            "-cpu",
            "max",
        ])
        .args(["-m", &spec.memory_mib.to_string(), "-smp", "1"])
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .args(["-device", "intel-iommu,intremap=on"])
        .args([
            "-chardev",
            "stdio,id=console,signal=off",
            "-serial",
            "chardev:console",
        ])
        .arg("-qmp")
        .arg(format!(
            "unix:{},server=on,wait=off",
            dir.join("qmp.sock").display()
        ))
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initramfs)
        .args([
            "-append",
            "console=ttyS0 intel_iommu=on quiet loglevel=3 panic=-1",
        ]);
        for port in 1..=spec.root_ports {
            cmd.args([
                "-device",
                &format!(
                    "pcie-root-port,id=rp{port},bus=pcie.0,addr={:#x},chassis={port},slot={port}",
                    port + 2
                ),
            ]);
        }
        cmd.args(&spec.args);
        let started = Instant::now();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(VmError::io("starting qemu-system-x86_64"))?;
        let (Some(stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(VmError::Guest("qemu's pipes are missing".into()));
        };
        let console = Arc::new(Console {
            text: Mutex::new(String::new()),
            grew: Condvar::new(),
        });
        let feed = console.clone();
        let mut log = std::fs::File::create(dir.join("serial.log"))
            .map_err(VmError::io("creating serial.log"))?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                // The log is for a person reading after a failure; losing it loses no result.
                let _log_lost = log.write_all(&buf[..n]);
                let text = String::from_utf8_lossy(&buf[..n]).replace('\r', "");
                feed.text
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&text);
                feed.grew.notify_all();
            }
            feed.text
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_str("\n@@qemu exited\n");
            feed.grew.notify_all();
        });
        let mut vm = Self {
            child,
            stdin,
            console,
            next_id: 0,
            boot_time: Duration::ZERO,
            dir: dir.to_path_buf(),
        };
        vm.wait_for("@@ready\n", ready_within)?;
        vm.boot_time = started.elapsed();
        Ok(vm)
    }

    /// Waits until the console holds `marker`; returns everything up to and including it, and keeps
    /// the rest.
    fn wait_for(&mut self, marker: &str, within: Duration) -> Result<String, VmError> {
        let until = Instant::now() + within;
        let mut text = self.console.text.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(at) = text.find(marker) {
                let rest = text.split_off(at + marker.len());
                return Ok(std::mem::replace(&mut *text, rest));
            }
            if text.contains("@@qemu exited") {
                let stderr = self.child.stderr.take().map(|mut e| {
                    let mut s = String::new();
                    let _partial = e.read_to_string(&mut s);
                    s
                });
                return Err(VmError::Guest(format!(
                    "QEMU exited waiting for {marker:?}: {}; console log in {}",
                    stderr.unwrap_or_default().trim(),
                    self.dir.join("serial.log").display()
                )));
            }
            let now = Instant::now();
            if now >= until {
                return Err(VmError::Guest(format!(
                    "no {marker:?} within {within:?}; console log in {}",
                    self.dir.join("serial.log").display()
                )));
            }
            text = self
                .console
                .grew
                .wait_timeout(text, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Runs `command` with the guest's shell and returns its status and output.
    ///
    /// # Errors
    /// The guest did not answer within `within`.
    pub fn run_within(&mut self, command: &str, within: Duration) -> Result<Ran, VmError> {
        self.next_id += 1;
        let id = self.next_id;
        if command.contains('\n') {
            return Err(VmError::Guest("one line per command".into()));
        }
        writeln!(self.stdin, "{id} {command}")
            .and_then(|()| self.stdin.flush())
            .map_err(VmError::io("writing to the console"))?;
        let answer = self.wait_for(&format!("@@end {id} "), within)?;
        let status_line = self.wait_for("\n", Duration::from_secs(5))?;
        let status = status_line
            .trim()
            .parse()
            .map_err(|_| VmError::Guest(format!("bad status {status_line:?}")))?;
        let body = answer
            .split_once(&format!("@@begin {id}\n"))
            .map_or("", |(_, b)| b)
            .trim_end_matches(&format!("@@end {id} "));
        let output = body
            .lines()
            .filter(|l| !is_kernel_line(l))
            .map(|l| format!("{l}\n"))
            .collect();
        Ok(Ran { status, output })
    }

    /// [`Self::run_within`] with a minute to answer.
    ///
    /// # Errors
    /// As there.
    pub fn run(&mut self, command: &str) -> Result<Ran, VmError> {
        self.run_within(command, Duration::from_secs(60))
    }
}

impl Vm {
    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether QEMU still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills QEMU with SIGKILL, as a host that loses power: nothing in the guest runs again.
    pub fn kill(&mut self) {
        // Gone already is fine.
        let _gone = self.child.kill();
        let _reaped = self.child.wait();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // Gone already is fine: the guest powered off or panicked.
        let _gone = self.child.kill();
        let _reaped = self.child.wait();
    }
}
