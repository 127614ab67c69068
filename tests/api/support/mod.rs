//! The one support module every test uses: the facade in-process over the simulator ([`app`]), the
//! real binary as a child process ([`process`]), a test PKI ([`pki`]), an OIDC issuer's HTTPS endpoint ([`issuer`]), real Redis deployments
//! ([`redis`]), offered load ([`load`]) and raw HTTP peers ([`peers`]). Tests import from here
//! (`crate::support::…`), never from one another.

pub mod app;
pub mod issuer;
pub mod load;
pub mod peers;
pub mod pki;
pub mod process;
pub mod redis;

pub(crate) use app::*;
pub(crate) use issuer::*;
pub(crate) use load::*;
pub(crate) use peers::*;
pub(crate) use pki::*;
pub(crate) use process::*;
pub(crate) use redis::*;
