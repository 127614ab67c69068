//! The serving machinery, apart from the call's flow: what a connection may cost before it makes a
//! call and how each is served, and the process around the calls.
//!
//! - [`listener`]: the accept loop, admitting a connection only within bounds (a cap, a handshake
//!   deadline, descriptors running out), and the connections' metrics;
//! - [`serve`]: serving each admitted connection (HTTP/1.1 header bound, idle timeout, GOAWAY at its
//!   age and at shutdown), with [`request_buffers`] bounding the request data held for calls not
//!   yet answered, and [`activity`] each connection's calls (the cap closes the one idle longest);
//! - [`tls`]: handshakes, and certificates reloaded on change or SIGHUP ([`reload`]);
//! - [`readiness`]: health answers, following the breakers when asked;
//! - [`metrics_endpoint`]: `GET /metrics` on its own listener.

pub(crate) mod activity;
pub(crate) mod listener;
pub(crate) mod metrics_endpoint;
pub(crate) mod readiness;
pub(crate) mod reload;
pub(crate) mod request_buffers;
pub(crate) mod serve;
pub(crate) mod side_listener;
pub(crate) mod tls;
