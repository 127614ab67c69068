//! The issuers whose keys the facade fetches (`jwks_url`): each must answer with a usable key set
//! now, or its callers' tokens are refused from the first call.

use std::time::{Duration, Instant};

use super::Verdict;
use crate::auth::Callers;

/// One verdict per issuer of `callers` whose keys are fetched over HTTPS, named by the issuer.
pub(super) async fn fetch_each(
    callers: Option<&Callers>,
    timeout: Duration,
) -> Vec<(String, Verdict)> {
    let Some(callers) = callers else {
        return Vec::new();
    };
    let mut verdicts = Vec::new();
    for keys in callers.fetched_key_sets() {
        let started = Instant::now();
        let fetched = super::bounded(timeout, keys.url(), keys.fetch()).await;
        let verdict = match fetched {
            Err(unanswered) => unanswered,
            Ok(Ok(fetched)) if fetched.problems.is_empty() => Verdict::Pass(format!(
                "{} from {} in {} ms",
                keys_counted(fetched.key_count()),
                fetched.from,
                started.elapsed().as_millis()
            )),
            Ok(Ok(fetched)) => Verdict::warn(
                format!(
                    "{} from {}; not used: {}",
                    keys_counted(fetched.key_count()),
                    fetched.from,
                    fetched.problems.join("; ")
                ),
                "only RS256, ES256 and EdDSA keys with a `kid` verify tokens; the others are \
                 skipped",
            ),
            Ok(Err(error)) => Verdict::fail(
                format!("cannot fetch the keys from {}: {error}", keys.url()),
                "check the URL (the issuer's JWK set or its discovery document), that this \
                 network may reach it, its certificate against the issuer's ca_file, and the \
                 token_file if the issuer asks for one",
            ),
        };
        verdicts.push((keys.issuer().to_owned(), verdict));
    }
    verdicts
}

fn keys_counted(count: usize) -> String {
    match count {
        1 => "1 key".to_owned(),
        n => format!("{n} keys"),
    }
}
