//! The dashboard's page: `/ui` serves one HTML page, its script and its style, built into the binary
//! (nothing is fetched from the network at run time; `cargo build` alone builds it). The page reads
//! the same API as the CLI with the token the operator gives it, and re-reads what it shows on each
//! `change` from `/v1/events`, so it stays live without reloading.

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            ("content-type", content_type),
            // Only this origin's own files and API: no inline script, nothing from elsewhere.
            (
                "content-security-policy",
                "default-src 'self'; img-src 'self' data:; style-src 'self'",
            ),
        ],
        body,
    )
}

/// The page's routes.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/ui",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}
