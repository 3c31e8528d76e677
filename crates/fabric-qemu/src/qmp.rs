//! A QMP client on a Unix socket: one command at a time, each answer read with a deadline; events that
//! arrive meanwhile are kept for [`Qmp::wait_event`].

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Why a QMP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be reached or broke (the guest's QEMU is gone).
    #[error("QMP {0}")]
    Io(#[from] std::io::Error),
    /// QEMU answered something that is not QMP.
    #[error("QMP protocol: {0}")]
    Protocol(String),
    /// QEMU refused the command.
    #[error("{command}: {class}: {desc}")]
    Command {
        /// The command.
        command: String,
        /// QEMU's error class (`GenericError`, `DeviceNotFound`, ...).
        class: String,
        /// QEMU's description.
        desc: String,
    },
    /// No answer or event in time.
    #[error("QMP: no {0} in time")]
    Timeout(String),
}

impl QmpError {
    /// Whether QEMU said the named device or node does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            Self::Command { class, desc, .. } => {
                class == "DeviceNotFound"
                    || desc.contains("not found")
                    || desc.contains("No such")
                    || desc.contains("Cannot find")
            }
            _ => false,
        }
    }
}

/// One QMP connection.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    events: Vec<Value>,
    /// Nanoseconds spent waiting for QEMU's answers and events.
    waited: Arc<AtomicU64>,
}

impl Qmp {
    /// Connects, reads the greeting and leaves capabilities negotiation.
    ///
    /// # Errors
    /// [`QmpError`].
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Self, QmpError> {
        Self::connect_counting(socket, timeout, Arc::default())
    }

    /// [`Self::connect`], adding the time spent waiting for QEMU to `waited` (nanoseconds).
    ///
    /// # Errors
    /// [`QmpError`].
    pub fn connect_counting(
        socket: &Path,
        timeout: Duration,
        waited: Arc<AtomicU64>,
    ) -> Result<Self, QmpError> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let writer = stream.try_clone()?;
        let mut qmp = Self {
            reader: BufReader::new(stream),
            writer,
            events: Vec::new(),
            waited,
        };
        let greeting = qmp.read_message(Instant::now() + timeout, "greeting")?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!("greeting {greeting}")));
        }
        qmp.execute("qmp_capabilities", json!({}), timeout)?;
        Ok(qmp)
    }

    fn read_message(&mut self, until: Instant, what: &str) -> Result<Value, QmpError> {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(QmpError::Timeout(what.to_owned()));
        }
        self.reader.get_ref().set_read_timeout(Some(left))?;
        let mut line = String::new();
        let asked = Instant::now();
        let read = self.reader.read_line(&mut line);
        let nanos = u64::try_from(asked.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.waited.fetch_add(nanos, Ordering::Relaxed);
        match read {
            Ok(0) => Err(QmpError::Protocol("the socket closed".into())),
            Ok(_) => serde_json::from_str(line.trim())
                .map_err(|e| QmpError::Protocol(format!("{e}: {}", line.trim()))),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(QmpError::Timeout(what.to_owned()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Runs `command` with `arguments` and returns its `return` value.
    ///
    /// # Errors
    /// [`QmpError::Command`] with QEMU's class and description; I/O, protocol and timeout errors.
    pub fn execute(
        &mut self,
        command: &str,
        arguments: Value,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        let request = json!({ "execute": command, "arguments": arguments });
        self.writer.write_all(format!("{request}\n").as_bytes())?;
        let until = Instant::now() + timeout;
        loop {
            let message = self.read_message(until, command)?;
            if message.get("event").is_some() {
                self.events.push(message);
                continue;
            }
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                return Err(QmpError::Command {
                    command: command.to_owned(),
                    class: error["class"].as_str().unwrap_or("").to_owned(),
                    desc: error["desc"].as_str().unwrap_or("").to_owned(),
                });
            }
            return Err(QmpError::Protocol(format!("unexpected {message}")));
        }
    }

    /// Waits for event `name` whose `data.device` is `device` (or any, with `None`).
    ///
    /// # Errors
    /// [`QmpError::Timeout`] and read errors.
    pub fn wait_event(
        &mut self,
        name: &str,
        device: Option<&str>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        let matches = |e: &Value| {
            e["event"] == name && device.is_none_or(|d| e["data"]["device"].as_str() == Some(d))
        };
        if let Some(at) = self.events.iter().position(matches) {
            return Ok(self.events.remove(at));
        }
        let until = Instant::now() + timeout;
        loop {
            let message = self.read_message(until, name)?;
            if matches(&message) {
                return Ok(message);
            }
            if message.get("event").is_some() {
                self.events.push(message);
            }
        }
    }
}
