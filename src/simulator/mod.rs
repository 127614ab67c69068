//! An Amazon Connect simulator for CreatePersistentContactAssociation: the facade's default upstream
//! when no AWS account is at hand (`serve --simulator`, `simulate`) and the upstream of every test.
//!
//! It speaks the real wire format ([`wire`]) so the real aws-sdk-connect client (and boto3) talk to it
//! unchanged, models contacts and sessions with the documented semantics ([`contacts`]), and can be
//! told to fail like AWS and networks do ([`faults`]), including an account request-rate quota. It
//! knows accounts, roles and regions ([`identity`]) and serves STS `AssumeRole`, so the SDK's real
//! AssumeRole provider runs against it and a call signed for the wrong account fails as on AWS.
//!
//! Tests drive it in-process: [`Simulator::requests`] shows every request that reached the operation,
//! and [`Simulator::add_fault`] changes its behaviour while it runs.

pub(crate) mod contacts;
mod describe;
pub mod faults;
pub mod fixtures;
pub(crate) mod identity;
mod sts;
mod wire;

use std::{
    collections::VecDeque,
    net::SocketAddr,
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use parking_lot::{Mutex, MutexGuard};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use contacts::ContactStore;
use faults::{Fault, FaultSet, Verdict};
pub(crate) use fixtures::Fixtures;
use identity::Identities;

/// A request that reached the operation (after routing and signature checks).
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub instance_id: String,
    pub initial_contact_id: String,
    pub client_token: Option<String>,
    pub at: Instant,
}

/// Everything the simulator knows, shared by its connections.
pub struct SimulatorState {
    contacts: Mutex<ContactStore>,
    faults: Mutex<FaultSet>,
    quota: Option<DefaultDirectRateLimiter>,
    identities: Identities,
    /// The most recent requests, at most [`RECORDED_REQUESTS`], so a long load test stays bounded.
    requests: Mutex<VecDeque<RecordedRequest>>,
    /// Requests the quota refused with ThrottlingException.
    throttled: AtomicU64,
    /// DescribeContact calls authorized so far: (instance, contact).
    describes: Mutex<Vec<(String, String)>>,
}

/// How many requests the simulator remembers for [`Simulator::requests`].
pub const RECORDED_REQUESTS: usize = 100_000;

impl SimulatorState {
    fn new(fixtures: Fixtures) -> Self {
        let quota = fixtures.quota.map(|q| {
            let period = Duration::from_secs_f64(1.0 / q.rate_per_second);
            let burst = NonZeroU32::new(q.burst).unwrap_or(NonZeroU32::MIN);
            RateLimiter::direct(
                Quota::with_period(period)
                    .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
                    .allow_burst(burst),
            )
        });
        Self {
            contacts: Mutex::new(ContactStore::new(&fixtures.instances)),
            faults: Mutex::new(FaultSet::new(fixtures.faults)),
            quota,
            identities: Identities::new(
                &fixtures.accounts,
                fixtures
                    .instances
                    .iter()
                    .map(|i| (i.id.clone(), i.account.clone(), i.region.clone())),
                fixtures.access_key_ids,
            ),
            requests: Mutex::new(VecDeque::new()),
            throttled: AtomicU64::new(0),
            describes: Mutex::new(Vec::new()),
        }
    }

    /// Records a request and decides its fate: `None` when the account's quota refuses it.
    fn admit(&self, request: RecordedRequest) -> Option<Verdict> {
        let instance_id = request.instance_id.clone();
        {
            let mut requests = self.requests.lock();
            if requests.len() == RECORDED_REQUESTS {
                requests.pop_front();
            }
            requests.push_back(request);
        }
        if let Some(quota) = &self.quota
            && quota.check().is_err()
        {
            self.throttled.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.faults.lock().judge(&instance_id))
    }

    fn contacts(&self) -> MutexGuard<'_, ContactStore> {
        self.contacts.lock()
    }

    fn record_describe(&self, instance_id: &str, contact_id: &str) {
        let mut describes = self.describes.lock();
        if describes.len() < RECORDED_REQUESTS {
            describes.push((instance_id.to_owned(), contact_id.to_owned()));
        }
    }
}

/// A running simulator. Dropping it stops accepting connections.
pub struct Simulator {
    state: Arc<SimulatorState>,
    local_addr: SocketAddr,
    stop: CancellationToken,
}

impl Simulator {
    /// Binds `addr` (port 0 picks a free port) and serves in the background.
    pub async fn start(addr: SocketAddr, fixtures: Fixtures) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let state = Arc::new(SimulatorState::new(fixtures));
        let stop = CancellationToken::new();
        tokio::spawn(accept(listener, state.clone(), stop.clone()));
        tracing::info!(%local_addr, "Connect simulator listening");
        Ok(Self {
            state,
            local_addr,
            stop,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL to give the SDK as its endpoint.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Every request that reached the operation so far (the last [`RECORDED_REQUESTS`]), in
    /// arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests.lock().iter().cloned().collect()
    }

    /// The DescribeContact calls authorized so far: (instance, contact).
    pub fn describes(&self) -> Vec<(String, String)> {
        self.state.describes.lock().clone()
    }

    /// How many requests the account's quota refused with ThrottlingException so far.
    pub fn throttled(&self) -> u64 {
        self.state.throttled.load(Ordering::Relaxed)
    }

    /// How many times STS AssumeRole issued credentials.
    pub fn assume_role_calls(&self) -> u64 {
        self.state.identities.assume_role_calls()
    }

    /// Adds a fault rule while running.
    pub fn add_fault(&self, fault: Fault) {
        self.state.faults.lock().add(fault);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.state.faults.lock().clear();
    }

    /// Serves until the process is stopped.
    pub async fn run_until_stopped(self) {
        let _ = crate::signals::shutdown_signal().await;
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept(listener: TcpListener, state: Arc<SimulatorState>, stop: CancellationToken) {
    while let Some(accepted) = stop.run_until_cancelled(listener.accept()).await {
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %err, "simulator accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| wire::handle(state.clone(), request));
            // An error here is a client gone or a fault-injected drop: nothing to report.
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
