//! The controller as a process. `pcipool server` (hosts reached through their agents) and `pcipool dev`
//! (the embedded simulated lab) assemble the same [`pcipool_controller::Service`] here from a data
//! directory, a fabric description, a policy and tokens, and serve it over HTTP until told to stop.
//! The validation lab and the API benchmark use the same assembly, so what they measure is what runs.
//!
//! # Layout
//! - [`tokens`]: bearer-token files (generated secrets, operator token files).
//! - [`server`]: `pcipool server`'s assembly (store, agents, fabric manager).
//! - [`seat`]: `pcipool server` on etcd, leading the pool or following the leader.
//! - [`forward`]: how a follower passes requests to the leader.
//! - [`dev`]: the embedded lab (`pcipool dev`), also served from a thread ([`dev::DevServer`]).
//! - [`serve`]: serving a service on a listen address with one tokio runtime.

pub mod dev;
pub mod forward;
pub mod seat;
pub mod server;
pub mod tokens;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use pcipool_api::Principal;
use pcipool_controller::Service;
use pcipool_pool::policy::Policy;

/// Resolves on SIGINT or SIGTERM: how every long-running pcipool process (`dev`, `server`, `agent`,
/// `sim serve`, `lab up`) is told to stop.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Why a controller process could not be assembled or served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A file or description given by the operator is not valid (the CLI's "bad input").
    #[error("{0}")]
    BadInput(String),
    /// A file or directory could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The store could not be opened or read.
    #[error("the store: {0}")]
    Store(#[from] pcipool_store::StoreError),
    /// The controller could not start (registration, resuming workflows).
    #[error("starting the controller: {0}")]
    Controller(#[from] pcipool_controller::ControlError),
    /// The listen address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The server stopped with an error.
    #[error("serving the API: {0}")]
    Serve(std::io::Error),
}

impl ServeError {
    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

impl From<pcipool_sim::LoadError> for ServeError {
    fn from(e: pcipool_sim::LoadError) -> Self {
        match e {
            pcipool_sim::LoadError::Read { path, source } => Self::Io {
                context: format!("reading {path}"),
                source,
            },
            invalid @ pcipool_sim::LoadError::Invalid { .. } => Self::BadInput(invalid.to_string()),
        }
    }
}

/// Reads a pool policy file (tenants, quotas, lease caps, maintenance windows, overrides), or the
/// default policy without one; returns it with the name reports show.
///
/// # Errors
/// Unreadable file ([`ServeError::Io`]) or a policy that does not parse ([`ServeError::BadInput`]).
pub fn load_policy(file: Option<&Path>) -> Result<(String, Policy), ServeError> {
    let Some(path) = file else {
        return Ok(("default".to_owned(), Policy::default()));
    };
    let text = std::fs::read_to_string(path)
        .map_err(ServeError::io(format!("reading {}", path.display())))?;
    let policy = Policy::parse(&text)
        .map_err(|e| ServeError::BadInput(format!("{}: {e}", path.display())))?;
    Ok((path.display().to_string(), policy))
}

/// The multi-threaded tokio runtime a controller process serves on.
fn runtime() -> Result<tokio::runtime::Runtime, ServeError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServeError::io("starting the tokio runtime"))
}

/// Binds `listen`; the listener and the address it got.
async fn bind(listen: &str) -> Result<(tokio::net::TcpListener, SocketAddr), ServeError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: listen.to_owned(),
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(ServeError::io("reading the bound address"))?;
    Ok((listener, addr))
}

/// Serves `service` on `listen` (with `extra` routes on the same listener, made once its address is
/// known) until `shutdown` resolves, on one multi-threaded tokio runtime built here. `banner` runs once
/// the address is bound, before the first request is served.
///
/// # Errors
/// [`ServeError::Bind`], or the server's own failure.
pub fn serve<S: pcipool_store::Store + Send + Sync + 'static>(
    service: Service<S>,
    listen: &str,
    tokens: BTreeMap<String, Principal>,
    extra: impl FnOnce(SocketAddr) -> pcipool_api::Beside,
    banner: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    runtime()?.block_on(async move {
        let (listener, addr) = bind(listen).await?;
        let routes = extra(addr);
        banner(addr);
        pcipool_api::serve_service(Arc::new(service), listener, tokens, routes, shutdown)
            .await
            .map_err(ServeError::Serve)
    })
}
