//! Caller-supplied text, quoted within bounds. A caller chooses the length of its ids, tokens,
//! content types and paths; quoted whole, a 60 KB id becomes 60 KB of log per refused call (a flood
//! of them fills the log pipeline and the node's disk) and a 140 KB error the caller's own gRPC
//! library refuses to read (stock clients cap `grpc-status-details-bin` at 16 KiB). So every quote
//! of such a value is cut to a fixed number of characters, with a marker saying how much was left
//! out, and log quotes also escape control characters, which a terminal would otherwise obey (JSON
//! logs escape them already; text logs do not).

use std::fmt;

/// Characters of a caller's value a log line quotes.
pub(crate) const LOG_CHARS: usize = 128;

/// Characters of a caller's value an error message or detail quotes: more than any valid id (256)
/// or token (500) would need to be recognised, far below what a gRPC client accepts.
pub(crate) const ECHO_CHARS: usize = 512;

/// A caller's value as a log line quotes it: at most [`LOG_CHARS`] characters, control characters
/// escaped, and `…(+N bytes)` when cut.
pub(crate) struct Logged<'a>(pub &'a str);

impl fmt::Display for Logged<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (written, (at, c)) in self.0.char_indices().enumerate() {
            if written == LOG_CHARS {
                return write!(f, "…(+{} bytes)", self.0.len() - at);
            }
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Logged<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// A caller's value as an answer quotes it: at most [`ECHO_CHARS`] characters, and `…(+N bytes)`
/// when cut.
pub(crate) fn echo(value: &str) -> String {
    match value.char_indices().nth(ECHO_CHARS) {
        None => value.to_owned(),
        Some((at, _)) => format!("{}…(+{} bytes)", &value[..at], value.len() - at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_quoted_whole() {
        assert_eq!(Logged("instance-1").to_string(), "instance-1");
        assert_eq!(echo("instance-1"), "instance-1");
    }

    #[test]
    fn long_values_are_cut_on_a_character_with_what_was_left_out() {
        let long = "é".repeat(60_000);
        let logged = Logged(&long).to_string();
        assert!(logged.starts_with(&"é".repeat(LOG_CHARS)));
        assert!(logged.ends_with(&format!("…(+{} bytes)", 2 * (60_000 - LOG_CHARS))));
        let echoed = echo(&long);
        assert_eq!(echoed.chars().filter(|&c| c == 'é').count(), ECHO_CHARS);
        assert!(echoed.len() < 2 * ECHO_CHARS + 32);
    }

    #[test]
    fn control_characters_are_escaped_in_logs() {
        assert_eq!(
            Logged("a\u{1b}[2Jb\r\n\0").to_string(),
            "a\\u{1b}[2Jb\\r\\n\\u{0}"
        );
    }
}
