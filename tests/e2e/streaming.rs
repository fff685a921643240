//! Bodies far larger than the router's memory stream through it both ways: the real binary's
//! peak resident memory stays a small fraction of the body.

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;

use crate::support::*;

const BODY: u64 = 100 * 1024 * 1024;
/// The router may hold buffers and its own code, never the body.
const PEAK_RSS_LIMIT: u64 = 40 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_body_streams_through_both_ways_in_bounded_memory() {
    let setup = Setup::new().await;
    let router = Binary::serve(&setup.config_path());
    let rss_at_start = router.peak_rss();

    // Up: 100 MB in 1 MB chunks to an upstream that hashes what arrives.
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes>::new(2);
    let chunk = Bytes::from(pattern(1024 * 1024));
    let mut expected = 0xcbf2_9ce4_8422_2325u64;
    for _ in 0..BODY / chunk.len() as u64 {
        expected = fnv(expected, &chunk);
    }
    let sender = tokio::spawn(async move {
        for _ in 0..BODY / chunk.len() as u64 {
            tx.send_data(chunk.clone()).await.unwrap();
        }
    });
    let resp = post_streamed(router.addr, "/sink", body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let answer = resp.into_body().collect().await.unwrap().to_bytes();
    sender.await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&answer),
        format!("{BODY} {expected:x}"),
        "the upstream got every byte, in order"
    );

    // Down: 100 MB streamed from the upstream.
    let req = http::Request::get(format!("http://{}/source/{BODY}", router.addr))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let down = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let resp = down.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let (mut got, mut hash) = (0u64, 0xcbf2_9ce4_8422_2325u64);
    let mut expected = 0xcbf2_9ce4_8422_2325u64;
    let source_chunk = pattern(64 * 1024);
    for _ in 0..BODY / source_chunk.len() as u64 {
        expected = fnv(expected, &source_chunk);
    }
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            got += data.len() as u64;
            hash = fnv(hash, &data);
        }
    }
    assert_eq!(
        (got, hash),
        (BODY, expected),
        "the client got every byte, in order"
    );

    let peak = router.peak_rss();
    eprintln!(
        "router peak RSS: {} MiB at start, {} MiB after 2 x 100 MiB",
        rss_at_start >> 20,
        peak >> 20
    );
    assert!(
        peak < PEAK_RSS_LIMIT,
        "router peak RSS {} MiB: the body was buffered",
        peak >> 20
    );
}
