//! `tollgate demo-upstream`: a small echo server, the upstream of the quickstart example.
//! It answers every request with a JSON description of what it received.

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use axum::Json;
use std::process::ExitCode;

async fn echo(
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Json<serde_json::Value> {
    let headers: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    Json(serde_json::json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "headers": headers,
        "body_bytes": body.len(),
    }))
}

/// Run the echo server on `listen` until killed.
pub(crate) fn run(listen: &str) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async {
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cannot listen on {listen}: {e}");
                return ExitCode::from(1);
            }
        };
        tracing::info!(%listen, "demo upstream listening");
        let app = axum::Router::new().fallback(echo);
        match axum::serve(listener, app).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("demo upstream stopped: {e}");
                ExitCode::from(1)
            }
        }
    })
}
