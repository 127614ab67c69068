//! Each flag's value as people write it (rates, factors, sizes with units, durations, the quota
//! store's URL), refused with the flag's own words when it cannot be read.

use std::time::Duration;

use crate::store::StoreAddress;

pub(super) fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(format!(
            "`{text}` is not a positive number of requests per second"
        )),
    }
}

/// A rate where 0 means "no limit".
pub(super) fn rate_or_off(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate == 0.0 => Ok(rate),
        _ => positive_rate(text),
    }
}

pub(super) fn unit_factor(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(factor) if factor > 0.0 && factor <= 1.0 => Ok(factor),
        _ => Err(format!("`{text}` is not a factor in (0, 1]")),
    }
}

/// A size in bytes as people write it: `65536`, `64KiB`, `1 MiB` (K, M and G count in 1,024s).
pub(super) fn bytes(text: &str) -> Result<u64, String> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(text)
        .map_err(|err| format!("`{text}` is not a size in bytes (e.g. 65536, 64KiB, 1MiB): {err}"))
}

pub(super) fn size(text: &str) -> Result<usize, String> {
    usize::try_from(bytes(text)?).map_err(|_| format!("`{text}` is too large"))
}

pub(super) fn size_u32(text: &str) -> Result<u32, String> {
    u32::try_from(bytes(text)?).map_err(|_| format!("`{text}` is over 4GiB"))
}

/// An HTTP/2 flow-control window: from the protocol's initial 65,535 bytes to its largest, 2^31 - 1.
pub(super) fn window(text: &str) -> Result<u32, String> {
    match size_u32(text)? {
        window @ 65_535..=0x7fff_ffff => Ok(window),
        _ => Err(format!("`{text}` is not a window from 65535 bytes to 2GiB")),
    }
}

pub(super) fn duration(text: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(text)
}

/// Where the quota's buckets live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuotaStoreChoice {
    /// In this process.
    Local,
    /// In Redis, shared by every replica (standalone, cluster or sentinel); its `Debug` and
    /// `Display` never show the password.
    Redis(StoreAddress),
}

pub(super) fn quota_store(text: &str) -> Result<QuotaStoreChoice, String> {
    if text == "local" {
        return Ok(QuotaStoreChoice::Local);
    }
    text.parse()
        .map(QuotaStoreChoice::Redis)
        .map_err(|error: crate::store::address::AddressError| format!("`local`, or {error}"))
}
