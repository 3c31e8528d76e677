//! The one way pcipool changes a host: writes to kernel attribute files under the sysfs root, each
//! checked against the agent's pool, each with a deadline, each recorded in order (a dry run records
//! and does nothing).
//!
//! A sysfs write runs the kernel's handler in the writing thread: an unbind waits for the driver's
//! `remove`, which can block for good on a device stuck in D state. So every write runs on a thread of
//! its own and the caller waits at most the deadline; a write that does not finish is abandoned (its
//! thread stays blocked in the kernel, counted in [`Writer::abandoned`]) and reported as a timeout.

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pcipool_pcie::Bdf;
use serde::Serialize;

/// How long one attribute write may take unless the caller says otherwise.
pub const DEFAULT_WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// One write to a kernel attribute file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Write {
    /// The attribute file.
    pub path: PathBuf,
    /// Byte offset, for the binary `config` attribute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// What is written: text as the kernel reads it, or hex bytes for `config`.
    pub value: String,
    #[serde(skip)]
    bytes: Vec<u8>,
}

impl Write {
    /// A text write (`echo VALUE > PATH`).
    pub fn text(path: PathBuf, value: &str) -> Self {
        Self {
            path,
            offset: None,
            value: value.to_owned(),
            bytes: value.as_bytes().to_vec(),
        }
    }

    /// A binary write at `offset` (config space).
    pub fn at(path: PathBuf, offset: u64, bytes: &[u8]) -> Self {
        let value = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self {
            path,
            offset: Some(offset),
            value,
            bytes: bytes.to_vec(),
        }
    }
}

impl fmt::Display for Write {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.offset {
            Some(offset) => write!(f, "{} @{offset:#x} <- {}", self.path.display(), self.value),
            None => write!(f, "{} <- {:?}", self.path.display(), self.value),
        }
    }
}

/// Where attribute writes land. [`KernelFiles`] in production; a test wraps it to make the kernel
/// refuse a write it cannot provoke on a plain file (EBUSY, EINVAL).
pub trait AttributeFiles: Send + Sync + fmt::Debug + 'static {
    /// Writes `bytes` at `offset` in one `write` call, as sysfs expects.
    ///
    /// # Errors
    /// The kernel's answer.
    fn write(&self, path: &Path, offset: Option<u64>, bytes: &[u8]) -> io::Result<()>;
}

/// The files themselves: open for writing (never create, never truncate), one write.
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelFiles;

impl AttributeFiles for KernelFiles {
    fn write(&self, path: &Path, offset: Option<u64>, bytes: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        let written = match offset {
            Some(at) => file.write_at(bytes, at)?,
            None => io::Write::write(&mut &file, bytes)?,
        };
        if written == bytes.len() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {written} of {} bytes", bytes.len()),
            ))
        }
    }
}

/// Why a write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The write is outside what this agent may touch.
    #[error("refused to write {path}: {why}")]
    NotAllowed {
        /// The attribute.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The write did not finish within its deadline and was abandoned.
    #[error("writing {path} did not finish within {after_ms} ms")]
    Timeout {
        /// The attribute.
        path: PathBuf,
        /// The deadline.
        after_ms: u64,
    },
    /// The kernel answered the write with an error.
    #[error("writing {value:?} to {path}: {source}")]
    Kernel {
        /// The attribute.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The kernel's errno.
        #[source]
        source: io::Error,
    },
}

impl WriteError {
    /// The kernel's errno, when it answered.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { source, .. } => source.raw_os_error(),
            Self::NotAllowed { .. } | Self::Timeout { .. } => None,
        }
    }
}

/// What this process may write: attributes of the functions in its pool, the bus-wide files with one
/// of those functions as the value, and rescans. Nothing else under the sysfs root, and nothing outside
/// it. An empty pool allows nothing, so an agent given no pool never writes to `/sys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    sys: PathBuf,
    pool: BTreeSet<Bdf>,
}

impl Scope {
    /// The functions under `sys` an operator put in the pool.
    pub fn new(sys: &Path, pool: impl IntoIterator<Item = Bdf>) -> Self {
        Self {
            sys: sys.to_path_buf(),
            pool: pool.into_iter().collect(),
        }
    }

    /// The pool.
    pub fn pool(&self) -> &BTreeSet<Bdf> {
        &self.pool
    }

    /// Whether `bdf` is in the pool.
    pub fn contains(&self, bdf: Bdf) -> bool {
        self.pool.contains(&bdf)
    }

    /// Adds a function the pool owns without the operator naming it: a VF of a pooled PF, a
    /// borrowed device the fabric attached here.
    pub fn adopt(&mut self, bdf: Bdf) {
        self.pool.insert(bdf);
    }

    /// Checks one write.
    ///
    /// # Errors
    /// [`WriteError::NotAllowed`] naming the rule.
    pub fn check(&self, write: &Write) -> Result<(), WriteError> {
        let refuse = |why: &str| {
            Err(WriteError::NotAllowed {
                path: write.path.clone(),
                why: why.to_owned(),
            })
        };
        if self.pool.is_empty() {
            return refuse(
                "this process was given no pool of devices (and has adopted no borrowed one), so it writes nothing",
            );
        }
        let Ok(rel) = write.path.strip_prefix(&self.sys) else {
            return refuse("outside the sysfs root");
        };
        let parts: Vec<&str> = rel.iter().filter_map(|p| p.to_str()).collect();
        let pooled_value = || {
            write
                .value
                .trim()
                .parse::<Bdf>()
                .is_ok_and(|b| self.pool.contains(&b))
        };
        match parts.as_slice() {
            ["bus", "pci", "rescan"] | ["bus", "pci", "devices", _, "rescan"] => Ok(()),
            ["bus", "pci", "drivers_probe"] if pooled_value() => Ok(()),
            ["bus", "pci", "devices", bdf, "driver", "unbind"] if pooled_value() => {
                match bdf.parse::<Bdf>() {
                    Ok(b) if self.pool.contains(&b) && write.value.trim() == *bdf => Ok(()),
                    _ => refuse("an unbind names the device it is written under"),
                }
            }
            ["bus", "pci", "devices", bdf, attribute] => match bdf.parse::<Bdf>() {
                Ok(b) if self.pool.contains(&b) => match *attribute {
                    "driver_override" | "reset_method" | "reset" | "remove" | "sriov_numvfs"
                    | "config" => Ok(()),
                    _ => refuse("not an attribute pcipool writes"),
                },
                _ => refuse("the device is not in this agent's pool"),
            },
            _ => refuse("not a device or bus attribute of a pooled device"),
        }
    }
}

/// Live writes or a dry run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Write.
    Live,
    /// Record what would be written; write nothing.
    DryRun,
}

impl Mode {
    /// [`Mode::DryRun`] when `dry_run`, else [`Mode::Live`].
    pub fn dry_run(dry_run: bool) -> Self {
        if dry_run { Self::DryRun } else { Self::Live }
    }
}

/// Writes attribute files within a [`Scope`], with a deadline each, keeping the list of writes.
#[derive(Debug)]
pub struct Writer {
    files: Arc<dyn AttributeFiles>,
    scope: Scope,
    mode: Mode,
    deadline: Duration,
    log: Mutex<Vec<Write>>,
    abandoned: Arc<AtomicU64>,
    /// Nanoseconds spent waiting on the kernel: writes until it answered, and the waits the control
    /// adds ([`Self::add_waited`]).
    waited: Arc<AtomicU64>,
    /// The current step's deadline: no write waits past it.
    until: Option<Instant>,
}

impl Writer {
    /// A writer over the real files.
    pub fn new(scope: Scope, mode: Mode) -> Self {
        Self::with_files(Arc::new(KernelFiles), scope, mode)
    }

    /// A writer over `files` (a test's stand-in for the kernel's answers).
    pub fn with_files(files: Arc<dyn AttributeFiles>, scope: Scope, mode: Mode) -> Self {
        Self {
            files,
            scope,
            mode,
            deadline: DEFAULT_WRITE_DEADLINE,
            log: Mutex::new(Vec::new()),
            abandoned: Arc::new(AtomicU64::new(0)),
            waited: Arc::new(AtomicU64::new(0)),
            until: None,
        }
    }

    /// The same writer with another deadline per write.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// How long a write may take now: the per-write deadline, cut to what is left of the step's.
    pub fn deadline(&self) -> Duration {
        self.until.map_or(self.deadline, |u| {
            u.saturating_duration_since(Instant::now())
                .min(self.deadline)
        })
    }

    /// Sets the time by which the current step must be done.
    pub fn set_step_deadline(&mut self, until: Instant) {
        self.until = Some(until);
    }

    /// Live or dry run.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The scope.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The scope, to adopt a function into it.
    pub fn scope_mut(&mut self) -> &mut Scope {
        &mut self.scope
    }

    /// Writes abandoned at their deadline since this writer was made (their threads may still be
    /// blocked in the kernel).
    pub fn abandoned(&self) -> u64 {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// Time spent waiting on the kernel since this writer was made.
    pub fn waited(&self) -> Duration {
        Duration::from_nanos(self.waited.load(Ordering::Relaxed))
    }

    /// Counts `since.elapsed()` as time spent waiting on the kernel.
    pub fn add_waited(&self, since: Instant) {
        let nanos = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.waited.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Every write made (or, in a dry run, that would have been made), in order; clears the list.
    pub fn take_log(&self) -> Vec<Write> {
        std::mem::take(&mut *self.log.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Checks and makes one write.
    ///
    /// # Errors
    /// [`WriteError`]: outside the scope, the kernel's refusal, or the deadline.
    pub fn write(&self, write: Write) -> Result<(), WriteError> {
        self.scope.check(&write)?;
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(write.clone());
        if self.mode == Mode::DryRun {
            return Ok(());
        }
        let deadline = self.deadline();
        if deadline.is_zero() {
            return Err(WriteError::Timeout {
                path: write.path,
                after_ms: 0,
            });
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let files = self.files.clone();
        let (path, offset, bytes) = (write.path.clone(), write.offset, write.bytes.clone());
        let spawned = std::thread::Builder::new()
            .name("sysfs-write".into())
            .spawn(move || {
                // The receiver is gone when the caller gave up: nothing is left to tell.
                let _unheard = tx.send(files.write(&path, offset, &bytes));
            });
        if let Err(source) = spawned {
            return Err(WriteError::Kernel {
                path: write.path,
                value: write.value,
                source,
            });
        }
        let asked = Instant::now();
        let answer = rx.recv_timeout(deadline);
        self.add_waited(asked);
        match answer {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(WriteError::Kernel {
                path: write.path,
                value: write.value,
                source,
            }),
            Err(_) => {
                self.abandoned.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(path = %write.path.display(), "an attribute write passed its deadline and was abandoned");
                Err(WriteError::Timeout {
                    path: write.path,
                    after_ms: u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
                })
            }
        }
    }
}
