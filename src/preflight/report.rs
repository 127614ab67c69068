//! The check's answer: one line per check, for people (✓, ✗ or !, with the fix and the link under a
//! failure) and for machines (`--output json`).

use serde::Serialize;

/// Whether a failed check stops `check` from succeeding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// `serve` would fail its callers: `check` exits 1.
    Error,
    /// Worth acting on, but `serve` works: `check` still exits 0.
    Warning,
}

/// One check's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Line {
    pub name: String,
    /// Whether the check passed (a warning is not a pass).
    pub ok: bool,
    pub severity: Severity,
    pub message: String,
    /// What to change, when the check did not pass.
    pub fix: Option<String>,
    /// The book's section on this check.
    pub link: String,
    pub seconds: f64,
}

/// Every check's line, in order.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub checks: Vec<Line>,
}

impl Report {
    /// The report when the configuration files are refused before anything can be built: one
    /// failed `configuration` line.
    pub fn refused_configuration(problems: &str) -> Self {
        Self {
            checks: vec![Line {
                name: "configuration".to_owned(),
                ok: false,
                severity: Severity::Error,
                message: problems.trim().replace('\n', "; "),
                fix: Some(super::CONFIGURATION_FIX.to_owned()),
                link: format!("{}#configuration", super::CHAPTER),
                seconds: 0.0,
            }],
        }
    }

    /// No check of severity error failed (warnings never fail it).
    pub fn ok(&self) -> bool {
        self.checks
            .iter()
            .all(|line| line.ok || line.severity == Severity::Warning)
    }

    /// `{"ok": …, "checks": […]}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({ "ok": self.ok(), "checks": self.checks }).to_string()
    }

    /// One line per check, the fix and the link indented under each that did not pass.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for line in &self.checks {
            let mark = match (line.ok, line.severity) {
                (true, _) => "✓",
                (false, Severity::Warning) => "!",
                (false, Severity::Error) => "✗",
            };
            text.push_str(&format!(
                "{mark} {} ({:.2}s): {}\n",
                line.name, line.seconds, line.message
            ));
            if let Some(fix) = &line.fix {
                text.push_str(&format!("    fix: {fix}\n    see: {}\n", line.link));
            }
        }
        let (errors, warnings) =
            self.checks
                .iter()
                .filter(|line| !line.ok)
                .fold((0, 0), |(errors, warnings), line| match line.severity {
                    Severity::Error => (errors + 1, warnings),
                    Severity::Warning => (errors, warnings + 1),
                });
        text.push_str(&match (errors, warnings) {
            (0, 0) => format!("all {} checks passed\n", self.checks.len()),
            (0, w) => format!("no error; {w} warning(s)\n"),
            (e, w) => format!("{e} error(s), {w} warning(s): serve would fail its callers\n"),
        });
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(ok: bool, severity: Severity) -> Line {
        Line {
            name: "x".into(),
            ok,
            severity,
            message: "m".into(),
            fix: (!ok).then(|| "f".into()),
            link: "docs/operators/check.md#x".into(),
            seconds: 0.0,
        }
    }

    #[test]
    fn warnings_never_fail_the_report_and_errors_always_do() {
        let warned = Report {
            checks: vec![line(true, Severity::Error), line(false, Severity::Warning)],
        };
        assert!(warned.ok());
        assert!(warned.to_text().contains("! x"), "{}", warned.to_text());
        let failed = Report {
            checks: vec![line(false, Severity::Error)],
        };
        assert!(!failed.ok());
        let json: serde_json::Value = serde_json::from_str(&failed.to_json()).unwrap();
        assert_eq!(json["ok"], false);
        assert_eq!(json["checks"][0]["severity"], "error");
        assert_eq!(json["checks"][0]["fix"], "f");
    }
}
