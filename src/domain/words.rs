//! Counts and durations as people write them in a sentence: `1 closed change`,
//! `2 closed changes`, `1 day`, `1 hour 30 minutes`. Tables keep their compact forms
//! (`report::duration`); prose uses these.

use std::time::Duration;

/// `n` and the noun, singular for one: `count(1, "change", "changes")` is `1 change`.
pub fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A duration in days, hours, minutes and seconds, spelled out and without the zero parts:
/// `1 day`, `4 hours`, `1 hour 30 minutes`, `45 seconds`; `0 seconds` for nothing.
/// Sub-second parts are dropped. No months or years: `30 days` stays exact. The result parses
/// back as a config duration (`verify.window = "1 day"`).
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    let parts: Vec<String> = [
        (secs / 86_400, "day", "days"),
        (secs % 86_400 / 3600, "hour", "hours"),
        (secs % 3600 / 60, "minute", "minutes"),
        (secs % 60, "second", "seconds"),
    ]
    .into_iter()
    .filter(|(n, _, _)| *n > 0)
    .map(|(n, one, many)| count(n, one, many))
    .collect();
    if parts.is_empty() {
        return "0 seconds".to_string();
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_singular_everything_else_plural() {
        assert_eq!(
            count(0u32, "closed change", "closed changes"),
            "0 closed changes"
        );
        assert_eq!(
            count(1u32, "closed change", "closed changes"),
            "1 closed change"
        );
        assert_eq!(
            count(2u64, "closed change", "closed changes"),
            "2 closed changes"
        );
    }

    #[test]
    fn durations_are_spelled_out() {
        let s = Duration::from_secs;
        assert_eq!(duration(s(86_400)), "1 day");
        assert_eq!(duration(s(2 * 86_400)), "2 days");
        assert_eq!(duration(s(4 * 3600)), "4 hours");
        assert_eq!(duration(s(3600 + 1800)), "1 hour 30 minutes");
        assert_eq!(duration(s(86_400 + 60 + 1)), "1 day 1 minute 1 second");
        assert_eq!(duration(s(45)), "45 seconds");
        assert_eq!(duration(Duration::from_millis(1500)), "1 second");
        assert_eq!(duration(s(0)), "0 seconds");
        assert_eq!(duration(s(30 * 86_400)), "30 days");
    }

    #[test]
    fn durations_read_back_as_config_durations() {
        // JSON outputs carry these strings: they stay parseable like the config's durations.
        for secs in [0, 1, 59, 60, 3600, 5400, 86_400, 90_061, 2_592_000] {
            let d = Duration::from_secs(secs);
            assert_eq!(
                humantime::parse_duration(&duration(d)).unwrap(),
                d,
                "{secs}"
            );
        }
    }
}
