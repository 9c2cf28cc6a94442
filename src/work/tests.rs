use chrono::{NaiveDate, TimeZone, Utc};

use super::*;

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn sprint() -> SprintWindow {
    // Sprint 3 of 14-day sprints from 2026-01-05: 2026-02-02 to 2026-02-15.
    let cal = SprintCalendar::new(d("2026-01-05"), 14);
    SprintWindow::of(
        &cal,
        Utc.with_ymd_and_hms(2026, 2, 10, 12, 0, 0).unwrap(),
        Which::Current,
    )
}

fn c(title: &str, start: Option<&str>, due: Option<&str>) -> Candidate {
    Candidate {
        title: title.into(),
        start: start.map(d),
        due: due.map(d),
    }
}

#[test]
fn the_window_of_current_and_next() {
    let cal = SprintCalendar::new(d("2026-01-05"), 14);
    let now = Utc.with_ymd_and_hms(2026, 2, 10, 12, 0, 0).unwrap();
    let s = SprintWindow::of(&cal, now, Which::Current);
    assert_eq!(s.number, 3);
    assert_eq!(
        (s.first_day(), s.last_day()),
        (d("2026-02-02"), d("2026-02-15"))
    );
    let n = SprintWindow::of(&cal, now, Which::Next);
    assert_eq!(n.number, 4);
    assert_eq!(n.first_day(), d("2026-02-16"));
    assert_eq!("next".parse::<Which>().unwrap(), Which::Next);
    assert!("later".parse::<Which>().is_err());
}

#[test]
fn a_pattern_picks_by_title() {
    let s = sprint();
    let cs = [
        c("Sprint 2", None, Some("2026-02-05")),
        c(" sprint 3 ", None, None),
    ];
    assert_eq!(pick(&cs, "Sprint {n}", &s), Some(1));
    assert_eq!(pick(&cs, "Release {n}", &s), None);
}

#[test]
fn no_pattern_picks_by_dates() {
    let s = sprint();
    // Due on the last day counts; due the day after does not.
    let cs = [
        c("a", None, Some("2026-02-16")),
        c("b", None, Some("2026-02-15")),
    ];
    assert_eq!(pick(&cs, "", &s), Some(1));
    assert_eq!(pick(&cs[..1], "", &s), None);
    // With both dates, the largest overlap wins over a due date inside.
    let cs = [
        c("due inside", None, Some("2026-02-03")),
        c("small", Some("2026-01-20"), Some("2026-02-03")),
        c("large", Some("2026-02-02"), Some("2026-02-15")),
    ];
    assert_eq!(pick(&cs, "", &s), Some(2));
    // No overlap at all: none.
    let cs = [c("before", Some("2026-01-01"), Some("2026-02-01"))];
    assert_eq!(pick(&cs, "", &s), None);
}

fn pr(number: u64, title: &str, branch: &str) -> PullRequest {
    PullRequest {
        number,
        title: title.into(),
        url: format!("https://x/pull/{number}"),
        state: PrState::Open,
        branch: branch.into(),
        head_sha: None,
        merge_sha: None,
        body: String::new(),
    }
}

fn issue(id: &str, number: Option<u64>) -> WorkItem {
    WorkItem {
        id: id.into(),
        number,
        title: "t".into(),
        url: "u".into(),
        state: ItemState::Open,
        labels: vec![],
        body: String::new(),
        is_pull_request: false,
        pull_requests: vec![],
        branches: vec![],
    }
}

#[test]
fn branches_name_items_by_convention_only() {
    assert!(branch_names("12-fix-cache", "#12"));
    assert!(branch_names("feature/12_fix", "#12"));
    assert!(branch_names("fix/issue-12", "#12"));
    assert!(!branch_names("release-12", "#12"));
    assert!(!branch_names("123-other", "#12"));
    assert!(!branch_names("fix/issue-123", "#12"));
    assert!(branch_names("feature/OPS-12-cache", "OPS-12"));
    assert!(!branch_names("feature/OPS-123", "OPS-12"));
}

#[test]
fn link_joins_prs_and_branches_to_the_items_they_name() {
    let mut items = vec![
        issue("#12", Some(12)),
        issue("OPS-7", None),
        issue("#99", Some(99)),
    ];
    let mut own = issue("#40", Some(40));
    own.is_pull_request = true;
    own.pull_requests = vec![pr(40, "own", "")];
    items.push(own);
    let prs = vec![
        pr(20, "Fix cache (#12)", "x"),
        pr(21, "OPS-7: speed", "y"),
        pr(40, "own, fuller", "40-own"),
        pr(22, "nothing", "z"),
    ];
    let branches = vec![
        "99-start".to_string(),
        "x".to_string(),
        "12-old".to_string(),
    ];
    link(&mut items, &prs, &branches);
    assert_eq!(
        items[0]
            .pull_requests
            .iter()
            .map(|p| p.number)
            .collect::<Vec<_>>(),
        vec![20]
    );
    assert_eq!(items[0].branches, vec!["12-old"]);
    assert_eq!(items[1].pull_requests[0].number, 21);
    assert!(items[2].pull_requests.is_empty());
    assert_eq!(items[2].branches, vec!["99-start"]);
    assert_eq!(items[3].pull_requests.len(), 1);
    assert_eq!(items[3].pull_requests[0].branch, "40-own");
    // Linking twice adds nothing.
    link(&mut items, &prs, &branches);
    assert_eq!(items[0].pull_requests.len(), 1);
    assert_eq!(items[0].branches.len(), 1);
}

#[test]
fn dates_in_each_source_format() {
    assert_eq!(date(Some("2026-02-03")), Some(d("2026-02-03")));
    assert_eq!(date(Some("2026-02-03T07:00:00Z")), Some(d("2026-02-03")));
    assert_eq!(
        date(Some("2015-04-11T15:22:00.000+10:00")),
        Some(d("2015-04-11"))
    );
    assert_eq!(
        date(Some("2015-04-11T15:22:00.000+1000")),
        Some(d("2015-04-11"))
    );
    assert_eq!(date(Some("soon")), None);
    assert_eq!(date(None), None);
}
