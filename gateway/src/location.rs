//! `upstream.rewrite_location`: an upstream answer's `Location` or `Content-Location` that
//! points into the target (its URL with the base path, or an absolute path under the base
//! path) is rewritten to the API's public path, so that a façade at `/petstore` in front of
//! `http://10.0.0.5:9000/v1` hands out `/petstore/pets/42`, not the internal
//! `http://10.0.0.5:9000/v1/pets/42` (nginx's `proxy_redirect default`). Anything else
//! (another host, a path outside the base path, a relative reference) passes unchanged.

use http::header::{CONTENT_LOCATION, LOCATION};
use http::HeaderValue;
use pingora_http::ResponseHeader;
use tollgate_config::Target;

/// Rewrites `Location` and `Content-Location` of `resp`, an answer of `target`, for the
/// API at `prefix`.
pub(crate) fn rewrite(resp: &mut ResponseHeader, target: &Target, prefix: &str) {
    for name in [LOCATION, CONTENT_LOCATION] {
        let Some(new) = resp
            .headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| rewritten(v, target, prefix))
            .and_then(|v| HeaderValue::try_from(v).ok())
        else {
            continue;
        };
        // Through Pingora's head: the name keeps its spelling where that matters.
        let _ = resp.insert_header(name, new);
    }
}

/// `location` pointing into `target`, as a path under `prefix`; `None` when it does not.
fn rewritten(location: &str, target: &Target, prefix: &str) -> Option<String> {
    let rest = match split_scheme(location) {
        Some((tls, after)) => {
            let end = after.find(['/', '?', '#']).unwrap_or(after.len());
            if tls != target.tls || !same_authority(&after[..end], target) {
                return None;
            }
            &after[end..]
        }
        None if location.starts_with('/') && !location.starts_with("//") => location,
        None => return None,
    };
    let tail = rest.strip_prefix(target.base_path.as_str())?;
    if !(tail.is_empty() || tail.starts_with(['/', '?', '#'])) {
        return None;
    }
    let mut out = String::with_capacity(prefix.len() + tail.len() + 1);
    out.push_str(prefix);
    if !tail.starts_with('/') && (out.is_empty() || tail.is_empty()) {
        out.push('/');
    }
    out.push_str(tail);
    Some(out)
}

/// `http://` or `https://` (any case) and the rest; whether it is `https`.
fn split_scheme(url: &str) -> Option<(bool, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme.eq_ignore_ascii_case("http") {
        Some((false, rest))
    } else if scheme.eq_ignore_ascii_case("https") {
        Some((true, rest))
    } else {
        None
    }
}

/// Whether `authority` (`host[:port]`, no user information) names `target`, the port
/// defaulting to the scheme's.
fn same_authority(authority: &str, target: &Target) -> bool {
    if authority.contains('@') {
        return false;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, p.parse::<u16>().ok()),
        _ => (authority, None),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let default = if target.tls { 443 } else { 80 };
    host.eq_ignore_ascii_case(&target.host) && port.unwrap_or(default) == target.port
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Target {
        let yaml = format!(
            "version: 1\napis:\n  - id: a\n    path: /a\n    upstream: {{ targets: [\"{url}\"] }}\n"
        );
        tollgate_config::parse_and_compile(&yaml).unwrap().apis[0]
            .upstream
            .targets[0]
            .clone()
    }

    #[test]
    fn locations_into_the_target_move_under_the_prefix() {
        let t = target("http://10.0.0.5:9000/v1");
        let r = |l: &str| rewritten(l, &t, "/petstore");
        assert_eq!(
            r("http://10.0.0.5:9000/v1/pets/42").as_deref(),
            Some("/petstore/pets/42")
        );
        assert_eq!(
            r("HTTP://10.0.0.5:9000/v1/pets?x=1").as_deref(),
            Some("/petstore/pets?x=1")
        );
        assert_eq!(r("/v1/pets/42").as_deref(), Some("/petstore/pets/42"));
        assert_eq!(r("/v1").as_deref(), Some("/petstore/"));
        assert_eq!(r("/v1?page=2").as_deref(), Some("/petstore?page=2"));
        // Outside the base path, another host or port, another scheme, relative: unchanged.
        assert_eq!(r("/v10/pets"), None);
        assert_eq!(r("/other"), None);
        assert_eq!(r("http://10.0.0.6:9000/v1/pets"), None);
        assert_eq!(r("http://10.0.0.5/v1/pets"), None);
        assert_eq!(r("https://10.0.0.5:9000/v1/pets"), None);
        assert_eq!(r("pets/42"), None);
        assert_eq!(r("//10.0.0.5:9000/v1/pets"), None);
        assert_eq!(r("http://user@10.0.0.5:9000/v1/pets"), None);

        // No base path, default port, root API.
        let t = target("https://api.internal");
        assert_eq!(
            rewritten("https://API.internal:443/x", &t, "/pub").as_deref(),
            Some("/pub/x")
        );
        assert_eq!(
            rewritten("https://api.internal", &t, "/pub").as_deref(),
            Some("/pub/")
        );
        assert_eq!(rewritten("/x/y", &t, "").as_deref(), Some("/x/y"));
        assert_eq!(
            rewritten("https://api.internal?q", &t, "").as_deref(),
            Some("/?q")
        );
        let t = target("http://[::1]:8080/v2");
        assert_eq!(
            rewritten("http://[::1]:8080/v2/a", &t, "/six").as_deref(),
            Some("/six/a")
        );
    }
}
