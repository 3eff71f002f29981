//! Graceful shutdown on SIGTERM and SIGINT: in-flight requests finish, new connections are
//! refused, the process exits 0 within the grace period.
#![allow(missing_docs)]

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tollgate_tests::*;

const GRACE: u64 = 10;

/// Polls (bounded by `timeout`) until connecting to `addr` is refused.
async fn wait_refused(addr: SocketAddr, timeout: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Some(t0.elapsed()),
            _ => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
    None
}

async fn in_flight_request_survives(sig: Signal) {
    let up = Upstream::start("slow");
    let mut gw = Gateway::builder(&echo_config(&up.url()))
        .grace_period(GRACE)
        .start();
    let url = gw.url("/echo/slow?sleep_ms=1500");
    let inflight = tokio::spawn(async move {
        let t0 = Instant::now();
        let r = client().get(url).send().await;
        match r {
            Ok(resp) => {
                let a = Answer::read(resp).await;
                Ok((a.status, a.from_upstream("slow"), t0.elapsed()))
            }
            Err(e) => Err(format!("{e:?}")),
        }
    });
    assert!(
        up.wait_for_requests(1, Duration::from_secs(5)),
        "the slow request never reached the upstream"
    );
    let t0 = Instant::now();
    gw.signal(sig);

    let refused = wait_refused(gw.addr(), Duration::from_secs(3)).await;
    let result = inflight.await.expect("request task");
    let exit = gw.wait_exit(Duration::from_secs(GRACE + 2)).await;
    let exited_after = t0.elapsed();

    let (status, from_upstream, took) =
        result.unwrap_or_else(|e| panic!("the in-flight request failed after {sig}: {e}"));
    assert_eq!(status, 200, "the in-flight request was not completed");
    assert!(from_upstream);
    assert!(
        took >= Duration::from_millis(1400),
        "answered too early: {took:?}"
    );
    assert!(
        refused.is_some(),
        "new connections were still accepted 3 s after {sig}"
    );
    let exit = exit.unwrap_or_else(|| {
        panic!("tollgate still runs {exited_after:?} after {sig} (grace period {GRACE}s)")
    });
    assert_eq!(exit.code(), Some(0), "exit status after {sig}: {exit}");
    assert!(
        exited_after < Duration::from_secs(GRACE),
        "exited only after {exited_after:?}"
    );
    eprintln!(
        "{sig}: refused after {:?}, exited after {exited_after:?}",
        refused.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests() {
    in_flight_request_survives(Signal::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_finishes_in_flight_requests() {
    in_flight_request_survives(Signal::SIGINT).await;
}

#[tokio::test]
async fn idle_gateway_exits_promptly() {
    let up = Upstream::start("a");
    let mut gw = Gateway::builder(&echo_config(&up.url()))
        .grace_period(GRACE)
        .start();
    // A keep-alive connection that stays idle must not hold the shutdown up.
    let c = client();
    assert_eq!(fetch(c.get(gw.url("/echo/x"))).await.status, 200);
    let t0 = Instant::now();
    gw.signal(Signal::SIGTERM);
    let exit = gw
        .wait_exit(Duration::from_secs(GRACE + 2))
        .await
        .expect("tollgate did not exit after SIGTERM");
    let took = t0.elapsed();
    assert_eq!(exit.code(), Some(0), "{exit}");
    assert!(
        took < Duration::from_secs(3),
        "an idle gateway took {took:?} to exit (grace period {GRACE}s)"
    );
}
