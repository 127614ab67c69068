//! Stopping the app as production does: told to stop (as a signal tells it), it drains the calls in
//! flight, then ends every task it spawned (the metrics endpoint, the routes reload, readiness) and
//! returns, without any task being aborted.

use std::time::{Duration, Instant};

use connect_facade::{app::App, simulator::Simulator, simulator::fixtures::Fixtures};
use tokio_util::sync::CancellationToken;

use crate::support::{ACCESS_KEY_ID, channel, entire_session, loopback};

#[tokio::test]
async fn told_to_stop_the_app_drains_its_call_then_ends_every_task_and_returns() {
    let simulator = Simulator::start(loopback(), Fixtures::demo())
        .await
        .unwrap();
    simulator.add_fault(crate::support::fault(
        connect_facade::simulator::faults::FaultEffect::Latency { millis: 300 },
    ));
    let routes = std::env::temp_dir().join(format!("lifecycle-routes-{}.yaml", std::process::id()));
    std::fs::write(
        &routes,
        "routes:\n  - name: default\n    instances: [\"*\"]\n    region: us-east-1\n",
    )
    .unwrap();
    let mut config = crate::support::offline_config();
    config.aws.endpoint_url = Some(simulator.endpoint_url());
    config.aws.routes = Some(routes.clone());
    config.retries.readiness_follows_breaker = true;
    config.telemetry.metrics_listen = Some(loopback());
    config.static_credentials = Some(connect_facade::upstream::StaticCredentials {
        access_key_id: ACCESS_KEY_ID.into(),
        secret_access_key: "test-secret".into(),
    });
    let app = App::build(config).await.expect("facade starts");
    let (addr, metrics) = (app.local_addr(), app.metrics_addr().unwrap());
    let stop = CancellationToken::new();
    let serving = tokio::spawn(app.run_until(stop.clone().cancelled_owned()));

    let mut client = connect_facade::proto::contact_service_client::ContactServiceClient::new(
        channel(addr).await,
    );
    let in_flight = tokio::spawn(async move {
        client
            .create_persistent_contact_association(entire_session())
            .await
    });
    crate::support::eventually("the call reaches AWS", Duration::from_secs(2), || {
        let simulator = &simulator;
        async move { !simulator.requests().is_empty() }
    })
    .await;
    assert!(tokio::net::TcpStream::connect(metrics).await.is_ok());

    let stopping = Instant::now();
    stop.cancel();
    let answer = in_flight
        .await
        .unwrap()
        .expect("the call in flight is drained, not cut");
    assert_eq!(answer.get_ref().continued_from_contact_id, "C3");
    tokio::time::timeout(Duration::from_secs(3), serving)
        .await
        .expect("run_until returns once its tasks end")
        .unwrap()
        .expect("a clean stop");
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "{:?}",
        stopping.elapsed()
    );
    assert!(
        tokio::net::TcpStream::connect(metrics).await.is_err(),
        "the metrics endpoint's task ended with the app"
    );
    let _ = std::fs::remove_file(routes);
}
