//! The sprint calendar: a fixed cadence from a start date, and the one numbering of sprints
//! that every output shows.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};

/// Maps instants to sprint numbers. Sprint 1 starts at `sprint.start` (midnight UTC); the
/// sprints before it are 0, −1, … The number is the same everywhere: in the decision, JSON
/// `sprint.index`, `policy explain`, the report's `S1` columns, the ITSM's notes. Arithmetic on
/// numbers (the sprint before, `lookback_sprints` back) is plain subtraction.
/// The number of the sprint that starts at `sprint.start`: people count from one.
const FIRST: i64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SprintCalendar {
    start: DateTime<Utc>,
    length_days: u32,
}

impl SprintCalendar {
    pub fn new(start: NaiveDate, length_days: u32) -> Self {
        let start = Utc.from_utc_datetime(&start.and_time(chrono::NaiveTime::MIN));
        SprintCalendar {
            start,
            length_days: length_days.max(1),
        }
    }

    pub fn length_secs(&self) -> i64 {
        i64::from(self.length_days) * 86_400
    }

    pub fn length_days(&self) -> u32 {
        self.length_days
    }

    /// The number of the sprint an instant falls in.
    pub fn index_of(&self, at: DateTime<Utc>) -> i64 {
        (at.timestamp() - self.start.timestamp()).div_euclid(self.length_secs()) + FIRST
    }

    /// When sprint number `index` starts.
    pub fn start_of(&self, index: i64) -> DateTime<Utc> {
        self.start + Duration::seconds((index - FIRST) * self.length_secs())
    }

    /// When sprint number `index` ends (the next one's start).
    pub fn end_of(&self, index: i64) -> DateTime<Utc> {
        self.start_of(index + 1)
    }
}

/// What finds a sprint's notice kept in an ITSM again (`announce`'s `itsm` sink: a
/// ServiceNow umbrella change's `correlation_id`): one per service and sprint. It never
/// starts like a change's correlation key, so no query for changes ever finds it.
pub fn notice_key(service_id: &str, sprint: i64) -> String {
    format!("changegate-announce:{service_id}:sprint-{sprint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn sprint_one_starts_at_sprint_start() {
        let cal = SprintCalendar::new(NaiveDate::from_ymd_opt(2026, 1, 5).unwrap(), 14);
        assert_eq!(cal.index_of(at("2026-01-05T00:00:00Z")), 1);
        assert_eq!(cal.index_of(at("2026-01-18T23:59:59Z")), 1);
        assert_eq!(cal.index_of(at("2026-01-19T00:00:00Z")), 2);
        assert_eq!(cal.start_of(1), at("2026-01-05T00:00:00Z"));
        assert_eq!(cal.start_of(2), at("2026-01-19T00:00:00Z"));
        assert_eq!(cal.end_of(1), at("2026-01-19T00:00:00Z"));
    }

    #[test]
    fn sprints_before_the_start_count_down_from_zero() {
        let cal = SprintCalendar::new(NaiveDate::from_ymd_opt(2026, 1, 5).unwrap(), 14);
        // The day before the start is the last day of sprint 0.
        assert_eq!(cal.index_of(at("2026-01-04T12:00:00Z")), 0);
        assert_eq!(cal.index_of(at("2025-12-22T00:00:00Z")), 0);
        assert_eq!(cal.index_of(at("2025-12-21T23:59:59Z")), -1);
        assert_eq!(cal.start_of(0), at("2025-12-22T00:00:00Z"));
        // Far in the past: 100 sprints before sprint 1 is sprint −99.
        let far = at("2026-01-05T00:00:00Z") - Duration::days(14 * 100);
        assert_eq!(cal.index_of(far), -99);
        assert_eq!(cal.start_of(-99), far);
    }

    #[test]
    fn numbers_and_starts_agree_both_ways() {
        let cal = SprintCalendar::new(NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(), 7);
        for n in -60..60 {
            assert_eq!(cal.index_of(cal.start_of(n)), n);
            assert_eq!(cal.index_of(cal.end_of(n) - Duration::seconds(1)), n);
        }
    }
}
