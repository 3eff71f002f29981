//! Counters in Redis, shared by every node that names the same server.
//!
//! Every operation is one Lua script run ([`SCRIPT`], `EVALSHA` with a fall-back to `EVAL`),
//! so a check-and-increment is atomic across nodes. The limit policies of one request check
//! all their counters in one run ([`TAKE_ALL`], [`RedisCounters::take_all`]): one round trip
//! per request, however many limits its chain holds. Windows are bucketed by Redis's own
//! clock (`TIME`), never the node's: the node proposes the window it believes is current
//! (its clock plus the offset to Redis's clock learnt from earlier replies), the script
//! checks that Redis's `TIME` falls inside it, and when it does not (a node with a wrong
//! clock, a call right at a boundary) answers with Redis's time so the node retries with the
//! right window. Every counter key names its window's start and expires at the window's end
//! (`PEXPIREAT`), so Redis holds only live windows.
//!
//! The connection is a [`ConnectionManager`], created lazily inside the runtime that first
//! uses it; after a failure it reconnects by itself (one attempt per failed call, with short
//! timeouts, so a dead Redis costs a request at most [`RedisCounters::timeout`]).

use crate::clock::Clock;
use crate::local::{Outcome, Refusal, TableKind};
use crate::window::{CachedPeriod, Window};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

/// The one script: `KEYS[1]` the counter (window included), `ARGV` = op (`take`, `refund`,
/// `bytes`, `get`), window start and end (ms), calls limit or bytes to add (-1: none),
/// bytes limit (-1: none). Answers `{code, calls, bytes, redis_now_ms}`: code 1 done, 0
/// refused (calls), 2 refused (bandwidth), -1 Redis's clock is outside the proposed window.
pub const SCRIPT_SOURCE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local start = tonumber(ARGV[2])
local stop = tonumber(ARGV[3])
if now < start or now >= stop then
  return {-1, 0, 0, now}
end
local key = KEYS[1]
local op = ARGV[1]
local calls = tonumber(redis.call('HGET', key, 'c') or '0')
local bytes = tonumber(redis.call('HGET', key, 'b') or '0')
local code = 1
if op == 'take' then
  local calls_limit = tonumber(ARGV[4])
  local bytes_limit = tonumber(ARGV[5])
  if calls_limit >= 0 and calls >= calls_limit then
    code = 0
  elseif bytes_limit >= 0 and bytes >= bytes_limit then
    code = 2
  else
    calls = redis.call('HINCRBY', key, 'c', 1)
    redis.call('PEXPIREAT', key, stop)
  end
elseif op == 'refund' then
  if calls > 0 then
    calls = redis.call('HINCRBY', key, 'c', -1)
  end
elseif op == 'bytes' then
  bytes = redis.call('HINCRBY', key, 'b', tonumber(ARGV[4]))
  redis.call('PEXPIREAT', key, stop)
end
return {code, calls, bytes, now}
"#;

/// The compiled script (its SHA-1 is computed once).
pub static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(SCRIPT_SOURCE));

/// The check of several counters in one run (the limit policies of one request, in chain
/// order): `KEYS[1..N]` the counters (windows included), `ARGV` four values per counter:
/// window start and end (ms), calls limit, bytes limit (-1: none). Every window is checked
/// first: when Redis's clock is outside one, nothing is done and the answer is
/// `{-1, redis_now_ms}`. Otherwise the counters are checked and counted in order, with the
/// outcome of [`SCRIPT`]'s `take` for each, stopping after the first refusal (the counters
/// after it are neither checked nor counted). Answers `{1, redis_now_ms}` followed by
/// `code, calls, bytes` for each counter checked: code 1 counted, 0 refused (calls), 2
/// refused (bandwidth); `bytes` is read only for a counter with a bytes limit (0 otherwise:
/// only bandwidth quotas count bytes).
///
/// Each `redis.call` from Lua costs about as much as the command itself on this kind of
/// machine, so the common case makes one: the script counts the call first (`HINCRBY`,
/// atomic with the rest of the script, so nothing else ever sees the count over the limit)
/// and takes it back when a limit refuses; the expiry is set when the increment created the
/// counter (its key names the window, so the expiry never changes).
pub const TAKE_ALL_SOURCE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = #KEYS
for i = 1, n do
  if now < tonumber(ARGV[4 * i - 3]) or now >= tonumber(ARGV[4 * i - 2]) then
    return {-1, now}
  end
end
local out = {1, now}
for i = 1, n do
  local key = KEYS[i]
  local calls_limit = tonumber(ARGV[4 * i - 1])
  local bytes_limit = tonumber(ARGV[4 * i])
  local calls = redis.call('HINCRBY', key, 'c', 1)
  if calls == 1 then
    redis.call('PEXPIREAT', key, tonumber(ARGV[4 * i - 2]))
  end
  local bytes = 0
  if bytes_limit >= 0 then
    bytes = tonumber(redis.call('HGET', key, 'b') or '0')
  end
  local code = 1
  if calls_limit >= 0 and calls > calls_limit then
    code = 0
  elseif bytes_limit >= 0 and bytes >= bytes_limit then
    code = 2
  end
  if code ~= 1 then
    calls = redis.call('HINCRBY', key, 'c', -1)
  end
  out[#out + 1] = code
  out[#out + 1] = calls
  out[#out + 1] = bytes
  if code ~= 1 then
    break
  end
end
return out
"#;

/// The compiled [`TAKE_ALL_SOURCE`].
pub static TAKE_ALL: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(TAKE_ALL_SOURCE));

/// One counter of [`RedisCounters::take_all`]: a check-and-increment in the window current by
/// Redis's clock.
#[derive(Debug, Clone)]
pub struct Check {
    /// Rate limit or quota.
    pub kind: TableKind,
    /// The policy position.
    pub origin: Arc<str>,
    /// The counter key.
    pub key: Arc<str>,
    /// The counting period.
    pub period: Arc<CachedPeriod>,
    /// Refuse when this many calls were already counted in the window.
    pub calls_limit: Option<u64>,
    /// Refuse when this many bytes were already counted in the window.
    pub bytes_limit: Option<u64>,
}

/// What to do in Redis.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    /// Check-and-increment (see [`crate::Take`]).
    Take {
        /// Calls limit.
        calls_limit: Option<u64>,
        /// Bytes limit.
        bytes_limit: Option<u64>,
    },
    /// Give one call back.
    Refund,
    /// Count bytes.
    Bytes(u64),
    /// Read the counts.
    Get,
}

/// A limit as a script argument: -1 for none.
fn limit_arg(l: Option<u64>) -> i64 {
    l.map_or(-1, |l| l.min(i64::MAX as u64) as i64)
}

impl Op {
    fn args(&self) -> (&'static str, i64, i64) {
        let limit = limit_arg;
        match *self {
            Op::Take {
                calls_limit,
                bytes_limit,
            } => ("take", limit(calls_limit), limit(bytes_limit)),
            Op::Refund => ("refund", -1, -1),
            Op::Bytes(n) => ("bytes", n.min(i64::MAX as u64) as i64, -1),
            Op::Get => ("get", -1, -1),
        }
    }
}

/// Which window an operation is for.
#[derive(Debug, Clone)]
pub enum At {
    /// The window current by Redis's clock.
    Now(Arc<CachedPeriod>),
    /// This window exactly (refunds and bytes of a call counted earlier); nothing is done
    /// when it is over.
    Window(Window),
}

/// The answer of a shared counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remote {
    /// The counts and decision.
    pub outcome: Outcome,
    /// The window the operation applied to.
    pub window: Window,
    /// Redis's clock when it ran (ms).
    pub now_ms: i64,
    /// False when the requested window was over and nothing was done.
    pub applied: bool,
}

/// Why a shared counter failed.
#[derive(Debug)]
pub enum SharedError {
    /// Redis failed or could not be reached.
    Redis(redis::RedisError),
    /// Redis did not answer in time.
    Timeout,
}

impl std::error::Error for SharedError {}

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SharedError::Redis(e) => write!(f, "redis: {e}"),
            SharedError::Timeout => f.write_str("redis did not answer in time"),
        }
    }
}

/// Counters in one Redis server.
pub struct RedisCounters {
    client: redis::Client,
    manager: OnceLock<ConnectionManager>,
    clock: Arc<dyn Clock>,
    /// Redis's clock minus ours, learnt from every reply (ms).
    offset_ms: AtomicI64,
    timeout: Duration,
    prefix: String,
}

impl std::fmt::Debug for RedisCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: only its host part.
        f.debug_struct("RedisCounters")
            .field(
                "addr",
                &self.client.get_connection_info().addr().to_string(),
            )
            .field("offset_ms", &self.offset_ms.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// TLS material for a `rediss://` URL (PEM). Without any, the system's trust store and
/// no client certificate.
#[derive(Clone, Default)]
pub struct RedisTls {
    /// Certificates trusted instead of the system's store.
    pub ca: Option<Vec<u8>>,
    /// Client certificate chain and its private key (mutual TLS).
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for RedisTls {
    /// Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca", &self.ca.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

impl RedisTls {
    /// Whether the PEM texts hold what they should: one or more certificates in the CA and
    /// the client chain, a private key in the key (the TLS library would only find out
    /// at the first connection).
    fn check(&self) -> Result<(), String> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let certificates = |flag: &str, pem: &[u8]| {
            let all: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
            match all {
                Ok(certs) if !certs.is_empty() => Ok(()),
                Ok(_) => Err(format!("{flag}: no PEM certificate")),
                Err(e) => Err(format!("{flag}: bad PEM: {e}")),
            }
        };
        if let Some(ca) = &self.ca {
            certificates("--redis-ca", ca)?;
        }
        if let Some((chain, key)) = &self.client {
            certificates("--redis-cert", chain)?;
            PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| format!("--redis-key: no PEM private key: {e}"))?;
        }
        Ok(())
    }
}

/// `message` without the password of `url` (`shown` is [`redacted_url`] of it), should the
/// message quote it.
fn redact_error(message: &str, url: &str, shown: &str) -> String {
    let message = message.replace(url, shown);
    match url
        .split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|authority| authority.rsplit_once('@'))
        .and_then(|(user, _)| user.split_once(':'))
    {
        Some((_, password)) if !password.is_empty() => message.replace(password, "***"),
        _ => message,
    }
}

/// `url` with the password of its user information replaced by `***`, for messages.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let user = match rest[..at].split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => rest[..at].to_owned(),
    };
    format!("{scheme}://{user}{}", &rest[at..])
}

impl RedisCounters {
    /// Counters in the Redis at `url` (`redis://host:port/db`, or `rediss://` with the
    /// system's trust store); nothing connects yet.
    pub fn new(url: &str, clock: Arc<dyn Clock>) -> Result<RedisCounters, String> {
        RedisCounters::with_tls(url, &RedisTls::default(), clock)
    }

    /// Counters in the Redis at `url`, with `tls` for a `rediss://` URL (given for a
    /// `redis://` one, it is an error); nothing connects yet. Messages never show the
    /// URL's password.
    pub fn with_tls(
        url: &str,
        tls: &RedisTls,
        clock: Arc<dyn Clock>,
    ) -> Result<RedisCounters, String> {
        let shown = redacted_url(url);
        let secure = url.starts_with("rediss://");
        let custom = tls.ca.is_some() || tls.client.is_some();
        if custom && !secure {
            return Err(format!(
                "--redis {shown}: --redis-ca, --redis-cert and --redis-key need a rediss:// URL"
            ));
        }
        tls.check()?;
        let client = if custom {
            redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: tls.client.clone().map(|(client_cert, client_key)| {
                        redis::ClientTlsConfig {
                            client_cert,
                            client_key,
                        }
                    }),
                    root_cert: tls.ca.clone(),
                },
            )
        } else {
            redis::Client::open(url)
        }
        .map_err(|e| {
            format!(
                "--redis {shown}: {}",
                redact_error(&e.to_string(), url, &shown)
            )
        })?;
        Ok(RedisCounters {
            client,
            manager: OnceLock::new(),
            clock,
            offset_ms: AtomicI64::new(0),
            timeout: Duration::from_millis(1000),
            prefix: "tollgate:".to_owned(),
        })
    }

    /// The longest a counter operation waits for Redis (1 s) before it fails.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Redis's clock as this node estimates it (ms).
    pub fn now_estimate(&self) -> i64 {
        self.clock.now_ms() + self.offset_ms.load(Ordering::Relaxed)
    }

    fn connection(&self) -> Result<ConnectionManager, SharedError> {
        if let Some(m) = self.manager.get() {
            return Ok(m.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(100));
        let m = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(SharedError::Redis)?;
        Ok(self.manager.get_or_init(|| m).clone())
    }

    /// The Redis key of a counter.
    pub fn key(&self, kind: TableKind, origin: &str, key: &str, window: Window) -> String {
        let kind = match kind {
            TableKind::Rate => "rl",
            TableKind::Quota => "q",
        };
        format!("{}{kind}:{origin}|{key}|{}", self.prefix, window.start_ms)
    }

    /// Run `op` on counter (`kind`, `origin`, `key`) in the window `at` names. Must be
    /// awaited inside a Tokio runtime.
    pub async fn run(
        &self,
        kind: TableKind,
        origin: &str,
        key: &str,
        at: At,
        op: Op,
    ) -> Result<Remote, SharedError> {
        let mut conn = self.connection()?;
        let (name, a4, a5) = op.args();
        let mut last_now = None;
        for _ in 0..3 {
            let window = match &at {
                At::Window(w) => *w,
                At::Now(p) => p.window_at(last_now.unwrap_or_else(|| self.now_estimate())),
            };
            let rkey = self.key(kind, origin, key, window);
            let mut call = SCRIPT.prepare_invoke();
            call.key(&rkey)
                .arg(name)
                .arg(window.start_ms)
                .arg(window.end_ms)
                .arg(a4)
                .arg(a5);
            let reply: (i64, i64, i64, i64) =
                match tokio::time::timeout(self.timeout, call.invoke_async(&mut conn)).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => return Err(SharedError::Redis(e)),
                    Err(_) => return Err(SharedError::Timeout),
                };
            let (code, calls, bytes, now) = reply;
            self.offset_ms
                .store(now - self.clock.now_ms(), Ordering::Relaxed);
            let outcome = Outcome {
                refused: match code {
                    0 => Some(Refusal::Calls),
                    2 => Some(Refusal::Bandwidth),
                    _ => None,
                },
                calls: calls.max(0) as u64,
                bytes: bytes.max(0) as u64,
            };
            if code == -1 {
                if let At::Window(_) = at {
                    return Ok(Remote {
                        outcome,
                        window,
                        now_ms: now,
                        applied: false,
                    });
                }
                last_now = Some(now);
                continue;
            }
            return Ok(Remote {
                outcome,
                window,
                now_ms: now,
                applied: true,
            });
        }
        Err(SharedError::Redis(redis::RedisError::from((
            redis::ErrorKind::Client,
            "the window moved three times in a row",
        ))))
    }

    /// Check and count every counter of `checks`, in order, in one script run (one round
    /// trip): each is refused or counted exactly as [`Op::Take`] would, and the run stops
    /// after the first refusal, so the counters after a refused one are not counted. Answers
    /// one [`Remote`] per counter checked, in order: all of them, or up to and including the
    /// refused one. Windows follow Redis's clock as in [`RedisCounters::run`]. Must be
    /// awaited inside a Tokio runtime.
    pub async fn take_all(&self, checks: &[Check]) -> Result<Vec<Remote>, SharedError> {
        if checks.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.connection()?;
        let mut windows = Vec::with_capacity(checks.len());
        let mut last_now = None;
        for _ in 0..3 {
            let now = last_now.unwrap_or_else(|| self.now_estimate());
            windows.clear();
            windows.extend(checks.iter().map(|c| c.period.window_at(now)));
            let mut call = TAKE_ALL.prepare_invoke();
            for (c, w) in checks.iter().zip(&windows) {
                call.key(self.key(c.kind, &c.origin, &c.key, *w))
                    .arg(w.start_ms)
                    .arg(w.end_ms)
                    .arg(limit_arg(c.calls_limit))
                    .arg(limit_arg(c.bytes_limit));
            }
            let reply: Vec<i64> =
                match tokio::time::timeout(self.timeout, call.invoke_async(&mut conn)).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => return Err(SharedError::Redis(e)),
                    Err(_) => return Err(SharedError::Timeout),
                };
            let (status, now, rest) = match reply.as_slice() {
                [status, now, rest @ ..]
                    if rest.len() % 3 == 0 && rest.len() / 3 <= checks.len() =>
                {
                    (*status, *now, rest)
                }
                _ => {
                    return Err(SharedError::Redis(redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "unexpected answer of the counter script",
                    ))))
                }
            };
            self.offset_ms
                .store(now - self.clock.now_ms(), Ordering::Relaxed);
            if status == -1 {
                last_now = Some(now);
                continue;
            }
            return Ok(rest
                .chunks_exact(3)
                .zip(&windows)
                .map(|(r, w)| Remote {
                    outcome: Outcome {
                        refused: match r[0] {
                            0 => Some(Refusal::Calls),
                            2 => Some(Refusal::Bandwidth),
                            _ => None,
                        },
                        calls: r[1].max(0) as u64,
                        bytes: r[2].max(0) as u64,
                    },
                    window: *w,
                    now_ms: now,
                    applied: true,
                })
                .collect());
        }
        Err(SharedError::Redis(redis::RedisError::from((
            redis::ErrorKind::Client,
            "the window moved three times in a row",
        ))))
    }

    /// Delete counters (usage reset).
    pub async fn delete(&self, keys: Vec<String>) -> Result<(), SharedError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut conn = self.connection()?;
        let mut cmd = redis::cmd("DEL");
        for k in &keys {
            cmd.arg(k);
        }
        match tokio::time::timeout(self.timeout, cmd.query_async::<i64>(&mut conn)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(SharedError::Redis(e)),
            Err(_) => Err(SharedError::Timeout),
        }
    }
}

#[cfg(test)]
mod tests;
