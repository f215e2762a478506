//! The JSON error shape of every non-2xx answer (the README's "Errors"), and
//! the one rejection handler that turns warp's "no route matched" into it.
//!
//! 5xx bodies are opaque: the cause is logged, never sent.

use std::convert::Infallible;

use serde::Serialize;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Rejection, Reply};

use crate::store::StoreError;

/// Every error a handler can answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// A malformed path or query parameter or body field.
    Validation {
        field: String,
        message: String,
    },
    /// No credentials (or none of the expected kind).
    Unauthorized,
    /// A bearer token was sent and refused (RFC 6750 `invalid_token`).
    InvalidToken,
    OrgContextRequired,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    /// The request head (request line and headers) is over the limit.
    HeaderFieldsTooLarge,
    /// The storage is failing (disk full, I/O error); retry later.
    Unavailable,
    /// A bounded resource is exhausted (request bodies in flight, their
    /// memory, list streams); retry after this many seconds.
    Busy {
        retry_after_secs: u32,
    },
    /// The request body did not arrive within the body deadline.
    RequestTimeout,
    Internal,
}

impl ApiError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str, String) {
        match self {
            Self::Validation { field, message } => (
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                "VALIDATION_ERROR",
                format!("Invalid {field}: {message}"),
            ),
            Self::Unauthorized | Self::InvalidToken => (
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "AUTH_REQUIRED",
                "Missing or invalid authentication token".into(),
            ),
            Self::OrgContextRequired => (
                StatusCode::FORBIDDEN,
                "ORG_CONTEXT_REQUIRED",
                "ORG_CONTEXT_REQUIRED",
                "This endpoint requires an organization context".into(),
            ),
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "RESOURCE_NOT_FOUND",
                "Resource not found".into(),
            ),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "METHOD_NOT_ALLOWED",
                "Method not allowed".into(),
            ),
            Self::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                "PAYLOAD_TOO_LARGE",
                "Request body is too large".into(),
            ),
            Self::HeaderFieldsTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "REQUEST_HEADER_FIELDS_TOO_LARGE",
                "REQUEST_HEADER_FIELDS_TOO_LARGE",
                "Request header fields are too large".into(),
            ),
            Self::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
                "SERVICE_UNAVAILABLE",
                "The service is temporarily unavailable; retry later".into(),
            ),
            Self::Busy { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
                "SERVICE_UNAVAILABLE",
                "The server is busy; retry later".into(),
            ),
            Self::RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "REQUEST_TIMEOUT",
                "REQUEST_TIMEOUT",
                "The request body did not arrive in time".into(),
            ),
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_SERVER_ERROR",
                "INTERNAL_ERROR",
                "Internal server error".into(),
            ),
        }
    }

    /// The message of this error's body, for answers in another shape
    /// (SCIM's).
    pub fn message(&self) -> String {
        self.parts().3
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// The JSON body of this error, for code that writes responses itself
    /// (the connection layer, below warp).
    pub fn json_body(&self) -> Vec<u8> {
        serde_json::to_vec(&self.body()).unwrap_or_default()
    }

    fn body(&self) -> Body<'_> {
        let (status, code, data_code, message) = self.parts();
        let field = match self {
            Self::Validation { field, .. } => Some(field.as_str()),
            _ => None,
        };
        Body {
            code,
            status: status.as_u16(),
            message,
            data: Data {
                code: data_code,
                field,
            },
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'static str,
    status: u16,
    message: String,
    data: Data<'a>,
}

#[derive(Serialize)]
struct Data<'a> {
    code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut resp =
            warp::reply::with_status(warp::reply::json(&self.body()), status).into_response();
        resp.headers_mut().insert(
            warp::http::header::CACHE_CONTROL,
            warp::http::HeaderValue::from_static("no-store"),
        );
        match &self {
            Self::Busy { retry_after_secs } => {
                resp.headers_mut().insert(
                    warp::http::header::RETRY_AFTER,
                    warp::http::HeaderValue::from(*retry_after_secs),
                );
            }
            // The connection's request body is left unread: it is closed,
            // not kept alive for a next request.
            Self::RequestTimeout | Self::PayloadTooLarge => {
                resp.headers_mut().insert(
                    warp::http::header::CONNECTION,
                    warp::http::HeaderValue::from_static("close"),
                );
            }
            _ => {}
        }
        // RFC 6750 section 3: no error code when no token came; a refused
        // one is `invalid_token` (the reason itself only goes to the log).
        let challenge = match self {
            Self::InvalidToken => Some(r#"Bearer error="invalid_token""#),
            Self::Unauthorized => Some("Bearer"),
            _ => None,
        };
        if let Some(challenge) = challenge {
            resp.headers_mut().insert(
                warp::http::header::WWW_AUTHENTICATE,
                warp::http::HeaderValue::from_static(challenge),
            );
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "storage unavailable");
            Self::Unavailable
        } else {
            tracing::error!(error = %e, "storage failure");
            Self::Internal
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        tracing::error!(error = %e, "a blocking task failed");
        Self::Internal
    }
}

/// Turns warp's own rejections (no route, wrong method, bad query …) into
/// the JSON error shape. Handlers never reject once their route matched.
///
/// # Errors
/// Never: every rejection becomes a response.
pub async fn handle_rejection(err: Rejection) -> Result<Response, Infallible> {
    let api = if err.is_not_found() {
        ApiError::NotFound
    } else if err.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::MethodNotAllowed
    } else if err.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::PayloadTooLarge
    } else if err.find::<warp::reject::InvalidQuery>().is_some() {
        ApiError::validation("query", "the query string is malformed")
    } else if let Some(h) = err.find::<warp::reject::InvalidHeader>() {
        ApiError::validation(h.name(), "the header is malformed")
    } else if let Some(h) = err.find::<warp::reject::MissingHeader>() {
        ApiError::validation(h.name(), "the header is required")
    } else if err.find::<warp::reject::LengthRequired>().is_some() {
        ApiError::validation("content-length", "the header is required")
    } else if err.find::<warp::reject::UnsupportedMediaType>().is_some() {
        ApiError::validation("content-type", "is not supported")
    } else {
        tracing::error!(rejection = ?err, "unhandled rejection");
        ApiError::Internal
    };
    Ok(api.into_response())
}
