//! Transports: cleartext HTTP/2 (prior knowledge) and TLS on the proxy listeners.
#![allow(missing_docs)]

use tollgate_tests::*;

#[tokio::test]
async fn h2c_prior_knowledge() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&echo_config(&up.url()));
    let c = h2c_client();
    let a = fetch(c.get(gw.url("/echo/h2?x=1"))).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.version, http::Version::HTTP_2);
    assert!(a.from_upstream("a"));
    assert!(a.header("x-request-id").is_some());
    let r = up.expect_last();
    assert_eq!(r.uri, "/h2?x=1");
    assert_eq!(r.header("x-forwarded-proto"), Some("http"));
    // Several streams on the connection, and a gateway answer over h2.
    for i in 0..5 {
        let a = fetch(c.get(gw.url(&format!("/echo/{i}")))).await;
        assert_eq!(a.status, 200);
    }
    let a = fetch(c.get(gw.url("/nothing"))).await;
    assert_eq!(a.version, http::Version::HTTP_2);
    a.assert_problem(404);
    let a = fetch(c.post(gw.url("/echo/post")).body("h2 body")).await;
    assert_eq!(a.status, 200);
    assert_eq!(up.expect_last().body, b"h2 body");
}

#[tokio::test]
async fn tls_listener() {
    let up = Upstream::start("a");
    let gw = Gateway::builder(&echo_config(&up.url())).tls().start();
    let c = tls_client();
    let a = fetch(c.get(gw.tls_url("/echo/secure?x=1"))).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.from_upstream("a"));
    let r = up.expect_last();
    assert_eq!(r.uri, "/secure?x=1");
    assert_eq!(
        r.header_all("x-forwarded-proto"),
        vec!["https"],
        "{:?}",
        r.headers
    );
    // The plain listener keeps working beside it.
    let a = get(&gw.url("/echo/plain")).await;
    assert_eq!(a.status, 200);
    assert_eq!(up.expect_last().header("x-forwarded-proto"), Some("http"));
    // Gateway answers over TLS too.
    let a = fetch(c.get(gw.tls_url("/nothing"))).await;
    a.assert_problem(404);
}
