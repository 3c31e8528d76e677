//! The API's handlers, one module per resource. Each handler only parses, authorises and calls the
//! domain; its `#[utoipa::path]` is its entry in the contract ([`crate::contract`]), so the document
//! says what the code does. Errors every authenticated route can answer (401, 500, 503) and 400 for
//! routes with input are added to every operation in one place, `contract::common_errors`.

pub(crate) mod agents;
pub(crate) mod audit;
pub(crate) mod devices;
pub(crate) mod leases;
pub(crate) mod watch;

/// The JSON body a handler takes: a parse failure is the handler's to report (after the token check),
/// as 400 BAD_REQUEST in the API's error form.
pub(crate) type Body<T> = Result<crate::server::JsonBody<T>, crate::server::ApiError>;

/// A path parameter a handler takes, its parse failure reported as for [`Body`].
pub(crate) type PathParam<T> =
    Result<axum::extract::Path<T>, axum::extract::rejection::PathRejection>;

/// Query parameters a handler takes, their parse failure reported as for [`Body`].
pub(crate) type QueryParams<T> =
    Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>;
