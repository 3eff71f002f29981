//! `GET /` and `GET /dashboard/{file}`: the operators' dashboard, static files embedded in
//! the binary. They need no token: the page asks the operator for one, keeps it in the
//! tab's `sessionStorage`, and sends it with every call it makes (`/analytics/requests`,
//! `/metrics`). The chart library (uPlot) is vendored under `admin-api/assets/vendor/`;
//! nothing is loaded from another origin (the page's CSP says so).

use crate::extract::P;
use crate::problem::Problem;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS,
};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../assets/index.html");

/// (name, content type, bytes) of every asset under `/dashboard/`.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/style.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/vendor/uPlot.min.css"),
    ),
    (
        "uPlot-LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("../assets/vendor/uPlot-LICENSE"),
    ),
];

/// Same origin only: scripts, styles, images, and calls to this admin listener.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /`.
#[utoipa::path(
    get,
    path = "/",
    tag = "dashboard",
    security(()),
    description = "The operators' dashboard (HTML). No token is needed for the page; it asks \
        for an admin or operator token and calls the analytics API with it.",
    responses((status = 200, description = "The page.", content_type = "text/html", body = String))
)]
pub(crate) async fn index() -> Response {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-cache"),
            (CONTENT_SECURITY_POLICY, CSP),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        INDEX,
    )
        .into_response()
}

/// `GET /dashboard/{file}`.
#[utoipa::path(
    get,
    path = "/dashboard/{file}",
    tag = "dashboard",
    security(()),
    description = "A static file of the dashboard: `app.js`, `style.css`, and the vendored \
        chart library `uPlot.iife.min.js`, `uPlot.min.css` with its `uPlot-LICENSE`.",
    params(("file" = String, Path, description = "The file name.")),
    responses(
        (status = 200, description = "The file.", content_type = "application/octet-stream", body = String),
        (status = 404, description = "No such file.")
    )
)]
pub(crate) async fn asset(P(file): P<String>) -> Result<Response, Problem> {
    let Some((_, content_type, bytes)) = ASSETS.iter().find(|(name, _, _)| *name == file) else {
        return Err(Problem::not_found("no such dashboard file"));
    };
    Ok((
        [
            (CONTENT_TYPE, *content_type),
            (CACHE_CONTROL, "no-cache"),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        *bytes,
    )
        .into_response())
}
