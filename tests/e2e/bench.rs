//! The performance harness's smoke variant: the whole of `henvis-bench` on a few hundred
//! events, so the harness never rots. Asserts that every phase ran and everything was
//! delivered, nothing about speed (docs/PERFORMANCE.md keeps the figures).

use henvis_tests::bench::{self, BenchConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_benchmark_harness_measures_every_figure_on_a_small_load() {
    let config = BenchConfig::smoke();
    let report = bench::run(&config, true).await.unwrap();
    let table = report.markdown();
    println!("{table}");
    for figure in [
        "raw JetStream publish, pipelined",
        "raw relay A→B (B's ack, then A's)",
        "raw durable pull consumer, explicit acks",
        "raw gRPC ingest (mTLS unary → JetStream)",
        "Submit throughput",
        "router, 1 recipient",
        "router, 3 recipients",
        "one inbox stream, read and acked",
        "end to end, 3 recipients",
        "end to end p99",
        "records stored per referral (every stream and bucket)",
        "NATS messages per referral (nats-server's in + out)",
        "records stored per follow-up (every stream and bucket)",
        "NATS messages per follow-up (nats-server's in + out)",
    ] {
        let row = report.rows.iter().find(|r| r.figure == figure);
        let value = row.map(|r| r.value).unwrap_or(f64::NAN);
        assert!(value.is_finite() && value > 0.0, "{figure}: {value}\n{table}");
    }
    assert!(
        report.rows.iter().filter(|r| r.ratio.is_some()).count() >= 6,
        "every henvis throughput figure is divided by its baseline\n{table}"
    );
    // the end-to-end phases: every referral acknowledged by each of its three recipients
    let paced = report.rows.iter().any(|r| r.figure.starts_with("end to end p50 at"));
    assert!(paced, "{table}");
    let follow_ups = report
        .rows
        .iter()
        .find(|r| r.figure.starts_with("end to end, follow-ups on"));
    assert!(
        follow_ups.is_some_and(|r| r.value > 0.0 && r.ratio.is_some()),
        "{table}"
    );
    assert!(
        report.delivered >= config.referrals * 3 + 30,
        "{} acknowledged\n{table}",
        report.delivered
    );
    for service in [
        "henvis-router",
        "henvis-ngo",
        "henvis-social",
        "henvis-police",
        "henvis-health",
        "nats-server 0",
    ] {
        assert!(
            report.memory.iter().any(|(name, kib)| name == service && *kib > 0),
            "peak memory of {service}\n{table}"
        );
    }
    assert!(bench::machine().contains("nats-server"), "{}", bench::machine());
}
