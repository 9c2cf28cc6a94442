//! The "check" step on Jira: `verify` against linked incident issues, `report` and
//! `policy simulate`. The Jira backend ignores `CHANGEGATE_NOW` (it never writes made-up
//! times into a real Jira), so the binary runs at the real time: `verify` runs with a
//! short window, and the report reads changes seeded sprints ago in the fake, written
//! with the backend's own property type.

use changegate::domain::{Decision, DecisionKind, Mode, Outcome};
use changegate::itsm::jira::Stored;
use chrono::NaiveTime;

use super::*;

fn rule<'a>(report: &'a Value, code: &str) -> &'a Value {
    report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["code"] == code)
        .unwrap_or_else(|| panic!("no rule {code} in {report}"))
}

/// A change as seeded in the fake: decided, approved, deployed and closed at given times.
struct Seed {
    decided: DateTime<Utc>,
    kind: DecisionKind,
    approved: Option<DateTime<Utc>>,
    deployed: Option<DateTime<Utc>>,
    first_commit: Option<DateTime<Utc>>,
    outcome: Option<Outcome>,
}

impl Site {
    /// Commits, gates and records `outcome`. A change that needs approval is gated with
    /// `--wait 0` first, then again (the fake's approver answers on that read). Returns
    /// the change's key, its commit and the first gate's report.
    async fn deploy(&self, needs_approval: bool, outcome: &str) -> (String, String, Value) {
        let sha = self.commit(Utc::now() - Duration::hours(1));
        let (code, out, err) = self.run(&["gate", "--wait", "0"]).await;
        assert!(code == 0 || code == 1, "{out}\n{err}");
        let first = json_out(&out);
        let key = first["change_id"].as_str().unwrap().to_string();
        if needs_approval {
            assert_eq!(code, 1, "{out}\n{err}");
            assert_eq!(first["decision"], "needs-approval", "{first}");
            let (code, out, err) = self.run(&["gate"]).await;
            assert_eq!(code, 0, "{out}\n{err}");
            let again = json_out(&out);
            assert_eq!(again["state"], "implementing", "{again}");
            assert_eq!(again["approved_by"], "Ada Approver");
        } else {
            assert_eq!(code, 0, "{out}\n{err}");
            assert_eq!(first["decision"], "pre-approved", "{first}");
        }
        let (code, out, err) = self.run(&["record", "--outcome", outcome]).await;
        assert_eq!(code, 0, "{out}\n{err}");
        (key, sha, first)
    }

    fn stored(&self, key: &str) -> Stored {
        serde_json::from_value(self.issue(key).props[PROPERTY].clone()).expect("the property")
    }

    /// A change of this service as the backend would have left it; returns its key.
    fn seed(&self, s: Seed) -> String {
        self.with(|st| {
            st.next_id += 1;
            let sha = format!("{:040x}", 0xfeed000 + st.next_id);
            let key = format!("changegate:{SERVICE_ID}:{ENV}:{sha}");
            let stored = Stored {
                key: key.clone(),
                commit: Some(sha.clone()),
                decision: Some(Decision {
                    kind: s.kind,
                    rules: Vec::new(),
                    mode: Mode::Enforce,
                    emergency: None,
                    sprint: 0,
                    allowance: 0,
                    allowance_used: 0,
                    clock_override: None,
                }),
                opened_at: Some(s.decided),
                decided_at: Some(s.decided),
                deployed_at: s.deployed,
                outcome: s.outcome,
                service: Some("payments-api".into()),
                service_id: Some(SERVICE_ID.into()),
                environment: Some(ENV.into()),
                first_commit_at: s.first_commit,
                approved_at: s.approved,
                closed_at: s
                    .outcome
                    .map(|_| s.deployed.unwrap_or(s.decided) + Duration::minutes(30)),
                ..Stored::default()
            };
            let mut labels = vec![
                labels::MARK.to_string(),
                labels::service(SERVICE_ID, ENV),
                labels::key(SERVICE_ID, ENV, &sha),
                labels::kind(s.kind),
                labels::day(s.decided.date_naive()),
            ];
            labels.extend(s.outcome.map(labels::outcome));
            let mut props = Map::new();
            props.insert(PROPERTY.into(), serde_json::to_value(&stored).unwrap());
            let status = match s.outcome {
                Some(Outcome::Success) => "Completed",
                Some(Outcome::Failure) => "Failed",
                Some(Outcome::Cancelled) => "Canceled",
                None => "Implementing",
            };
            st.issues.push(Issue {
                id: 10000 + st.next_id,
                key: format!("CHG-{}", st.next_id),
                status: status.into(),
                labels,
                fields: Map::new(),
                props,
                comments: Vec::new(),
                resolution: s.outcome.map(|_| "Done".to_string()),
                created: s.decided,
                updated: s.decided + Duration::hours(1),
                approval: None,
                hidden_for: 0,
                history: Vec::new(),
            });
            format!("CHG-{}", st.next_id)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_turns_a_success_into_a_failure_once() {
    let site = Site::start(
        Script::default(),
        "[policy]\nmin_history = 0\n[verify]\nwindow = \"2s\"\n",
    )
    .await;
    let (chg1, sha1, _) = site.deploy(false, "success").await;
    let (chg2, _, _) = site.deploy(false, "success").await;
    // CHG-1 caused an incident within its window; the one linked to CHG-2 was linked after
    // its window had closed (the changelog tells when).
    let (d1, d2) = (
        site.stored(&chg1).deployed_at.unwrap(),
        site.stored(&chg2).deployed_at.unwrap(),
    );
    let inc1 = site.link_incident(&chg1, d1 + Duration::seconds(1));
    let late = site.link_incident(&chg2, d2 + Duration::hours(1));
    // Both windows close.
    let due = d2 + Duration::milliseconds(2100);
    if let Ok(wait) = (due - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }

    let mark = site.log_len();
    let (code, out, err) = site.run(&["verify"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let verified = json_out(&out);
    let requests = site.counts(mark);
    assert_eq!(verified["failed_after_deploy"], 1, "{verified}");
    let list = verified["verified"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{verified}");
    assert_eq!(list[0]["change_id"], chg1.as_str());
    assert_eq!(list[0]["verdict"], "failed-after-deploy");
    assert_eq!(list[0]["incidents"], json!([inc1]));
    assert_eq!(list[0]["written"], true);
    assert_eq!(list[1]["change_id"], chg2.as_str());
    assert_eq!(list[1]["verdict"], "succeeded", "{late} came too late");

    // In Jira: the outcome label swapped, marked verified and failed after deploy, the
    // property updated, the incidents named in a comment.
    let issue = site.issue(&chg1);
    for l in [
        "changegate-failure",
        labels::VERIFIED,
        labels::FAILED_AFTER_DEPLOY,
    ] {
        assert!(issue.labels.contains(&l.to_string()), "{:?}", issue.labels);
    }
    assert!(!issue.labels.contains(&"changegate-success".to_string()));
    let stored = site.stored(&chg1);
    assert_eq!(stored.outcome, Some(Outcome::Failure));
    assert!(stored.failed_after_deploy);
    assert_eq!(stored.incidents, vec![inc1.clone()]);
    assert!(stored.verified_at.is_some());
    assert_eq!(
        stored.deployed_at,
        Some(d1),
        "the rest of the property is kept"
    );
    let note = comment_text(issue.comments.last().unwrap());
    assert!(
        note.contains("failed after deploy") && note.contains(&inc1),
        "{note}"
    );
    let ok = site.issue(&chg2);
    assert!(ok.labels.contains(&"changegate-success".to_string()));
    assert!(ok.labels.contains(&labels::VERIFIED.to_string()));
    assert!(!ok.labels.contains(&labels::FAILED_AFTER_DEPLOY.to_string()));
    assert_eq!(ok.comments.len(), 2, "the decision and the outcome only");

    // Requests for N = 2 due changes, F = 2 with a linked incident, 1 turned: one search,
    // F changelogs, N edits, and a re-read and a comment for the one turned.
    eprintln!("verify requests: {} {requests:#?}", total(&requests));
    assert_eq!(requests["POST /rest/api/3/search/jql"], 1, "{requests:#?}");
    assert_eq!(requests["GET /rest/api/3/issue/{key}/changelog"], 2);
    assert_eq!(requests["PUT /rest/api/3/issue/{key}"], 2);
    assert_eq!(requests["GET /rest/api/3/issue/{key}"], 1);
    assert_eq!(requests["POST /rest/api/3/issue/{key}/comment"], 1);
    assert_eq!(total(&requests), 7, "{requests:#?}");

    // A second run finds nothing due and writes nothing.
    let mark = site.log_len();
    let (code, out, err) = site.run(&["verify"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(json_out(&out)["verified"], json!([]));
    assert_eq!(site.writes(mark), Vec::<String>::new());
    assert_eq!(total(&site.counts(mark)), 1);

    // The next gate's track record counts the failure: 1 of the 2 closed changes failed.
    site.commit(Utc::now());
    let (code, out, err) = site.run(&["gate", "--wait", "0"]).await;
    assert_eq!(code, 1, "{out}\n{err}");
    let gate = json_out(&out);
    assert_eq!(gate["decision"], "needs-approval");
    let track = rule(&gate, "track-record");
    assert_eq!(track["passed"], false, "{track}");
    assert!(
        track["reason"]
            .as_str()
            .unwrap()
            .contains("success rate 50% over last 2"),
        "{track}"
    );
    // `status` shows the verified change as a failure, with its incident.
    let (code, out, err) = site.run(&["status", "--commit", &sha1]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let status = json_out(&out);
    assert_eq!(status["outcome"], "failure", "{status}");
    assert_eq!(status["incidents"], json!([inc1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_that_hide_the_issue_type_are_resolved_with_jql() {
    // As in the reference payload, the links show the linked issue's status only: the
    // incidents are then found with `issue in linkedIssues(KEY) AND issuetype in (...)`.
    let site = Site::start(
        Script {
            links_without_type: true,
            ..Script::default()
        },
        "[policy]\nmin_history = 0\n[verify]\nwindow = \"1s\"\n[jira]\nincident_types = [\"Incident\", \"Major incident\"]\n",
    )
    .await;
    let (chg, _, _) = site.deploy(false, "success").await;
    let deployed = site.stored(&chg).deployed_at.unwrap();
    let inc = site.link_incident(&chg, deployed);
    if let Ok(wait) = (deployed + Duration::milliseconds(1100) - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
    let mark = site.log_len();
    let (code, out, err) = site.run(&["verify"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let v = json_out(&out);
    assert_eq!(v["verified"][0]["verdict"], "failed-after-deploy", "{v}");
    assert_eq!(v["verified"][0]["incidents"], json!([inc]));
    // The due changes, then the incidents by JQL: one search more than with typed links.
    assert_eq!(site.counts(mark)["POST /rest/api/3/search/jql"], 2);
    assert!(
        site.issue(&chg)
            .labels
            .contains(&"changegate-failure".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_over_three_sprints_of_seeded_changes() {
    // Sprints of 14 days; the current one (S3) began today at midnight UTC.
    let today = Utc::now().date_naive();
    let start = today - Duration::days(28);
    let site = Site::start(
        Script::default(),
        &format!("[sprint]\nstart = \"{start}\"\nlength_days = 14\n[verify]\nwindow = \"24h\"\n"),
    )
    .await;
    let t = |day: i64, h: i64, m: i64| {
        (start + Duration::days(day))
            .and_time(NaiveTime::MIN)
            .and_utc()
            + Duration::hours(h)
            + Duration::minutes(m)
    };
    let pre = |decided: DateTime<Utc>, first: DateTime<Utc>, outcome| Seed {
        decided,
        kind: DecisionKind::PreApproved,
        approved: None,
        deployed: Some(decided + Duration::minutes(5)),
        first_commit: Some(first),
        outcome: Some(outcome),
    };
    let approved = |decided: DateTime<Utc>, at: DateTime<Utc>, first, outcome| Seed {
        decided,
        kind: DecisionKind::NeedsApproval,
        approved: Some(at),
        deployed: Some(at),
        first_commit: Some(first),
        outcome: Some(outcome),
    };
    use Outcome::{Cancelled, Failure, Success};
    // S1: two pre-approved, one approved after 2h; all succeed.
    site.seed(pre(t(1, 10, 0), t(0, 9, 0), Success));
    site.seed(pre(t(2, 10, 0), t(1, 15, 0), Success));
    site.seed(approved(t(3, 10, 0), t(3, 12, 0), t(2, 15, 0), Success));
    // S2: a pre-approved success that caused an incident 8h later; two approved after
    // 1h30m (its deploy fails) and 1h; one never approved, cancelled.
    let incident = site.seed(pre(t(15, 10, 0), t(14, 9, 0), Success));
    site.seed(approved(t(16, 13, 0), t(16, 14, 30), t(16, 9, 0), Failure));
    site.seed(approved(t(18, 10, 0), t(18, 11, 0), t(17, 9, 0), Success));
    site.seed(Seed {
        decided: t(19, 10, 0),
        kind: DecisionKind::NeedsApproval,
        approved: None,
        deployed: None,
        first_commit: None,
        outcome: Some(Cancelled),
    });
    let inc = site.link_incident(&incident, t(15, 18, 0));

    let (code, out, err) = site.run(&["verify"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let v = json_out(&out);
    assert_eq!(v["verified"].as_array().unwrap().len(), 6, "{v}");
    assert_eq!(v["failed_after_deploy"], 1, "{v}");

    let mark = site.log_len();
    let (code, out, err) = site.run(&["report", "--sprints", "3"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let requests = site.counts(mark);
    let doc = json_out(&out);
    let svc = &doc["services"][0];
    assert_eq!(svc["service"], "payments-api", "{doc}");
    assert_eq!(svc["service_id"], SERVICE_ID);
    assert_eq!(svc["environment"], ENV);
    let sprint = |n: i64| {
        svc["sprints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["sprint"] == n)
            .unwrap_or_else(|| panic!("no sprint {n} in {svc}"))
            .clone()
    };
    let counts = |s: &Value, keys: &[&str]| -> Vec<u64> {
        keys.iter()
            .map(|k| s[*k].as_u64().unwrap_or(u64::MAX))
            .collect()
    };
    const H: i64 = 3600;
    const M: i64 = 60;

    // S1: 3 changes, 2 pre-approved of an allowance of 2, one waited 2h; lead times (first
    // commit → deploy) 25h05m, 19h05m, 21h: median 21h; 3 deploys in 14 days.
    let s1 = sprint(1);
    assert_eq!(
        counts(
            &s1,
            &[
                "changes",
                "pre_approved",
                "allowance",
                "needs_approval",
                "succeeded",
                "failed",
                "deployments"
            ]
        ),
        [3, 2, 2, 1, 3, 0, 3],
        "{s1}"
    );
    assert_eq!(s1["approval_wait"]["median_secs"], 2 * H);
    assert_eq!(s1["success_rate"], 1.0);
    assert_eq!(s1["lead_time"]["median_secs"], 21 * H);
    assert_eq!(s1["deployment_frequency_per_day"], 3.0 / 14.0);

    // S2: the allowance grew to 4 (S1 closed 3, all successful). 4 changes, 1 pre-approved,
    // 3 needed approval; waits 1h30m and 1h: median 1h15m, p90 (rank ⌈1.8⌉ = 2) 1h30m.
    // 1 success, 2 failures (one after deploy), 1 cancelled: success rate 1/3. Lead times
    // 25h05m, 5h30m, 26h: median 25h05m. Restore: the failed-after-deploy change deployed
    // day 15 10:05, the next success deployed day 18 11:00: 3d 55m.
    let s2 = sprint(2);
    assert_eq!(
        counts(
            &s2,
            &[
                "changes",
                "pre_approved",
                "allowance",
                "needs_approval",
                "succeeded",
                "failed",
                "cancelled",
                "failed_after_deploy",
                "deployments"
            ]
        ),
        [4, 1, 4, 3, 1, 2, 1, 1, 3],
        "{s2}"
    );
    assert_eq!(s2["approval_wait"]["median_secs"], H + 15 * M);
    assert_eq!(s2["approval_wait"]["p90_secs"], H + 30 * M);
    assert_eq!(s2["success_rate"], 1.0 / 3.0);
    assert_eq!(s2["change_failure_rate"], 2.0 / 3.0);
    assert_eq!(s2["lead_time"]["median_secs"], 25 * H + 5 * M);
    assert_eq!(s2["time_to_restore"]["median_secs"], 3 * 24 * H + 55 * M);
    assert_eq!(s2["unrestored_failures"], 0);

    // S3 (current, nothing yet): the allowance backed off to 4 × 0.5 = 2 (S2: 1 of 3).
    let s3 = sprint(3);
    assert_eq!(counts(&s3, &["changes", "allowance"]), [0, 2], "{s3}");

    let total_kpis = &svc["total"];
    assert_eq!(
        counts(
            total_kpis,
            &["changes", "succeeded", "failed", "failed_after_deploy"]
        ),
        [7, 4, 2, 1]
    );
    assert_eq!(total_kpis["success_rate"], 4.0 / 6.0);

    // Requests: two service rounds (the service, then none new), the history as a gate
    // reads it (recent outcomes, one tally page) and one page of summaries; no write.
    eprintln!(
        "report requests (3 sprints, 7 changes): {} {requests:#?}",
        total(&requests)
    );
    assert_eq!(site.writes(mark), Vec::<String>::new());
    assert_eq!(total(&requests), 5, "{requests:#?}");

    // --all finds the one service, with the same figures.
    let (code, out, err) = site.run(&["report", "--all", "--sprints", "3"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(json_out(&out)["services"], doc["services"]);
    assert_eq!(site.stored(&incident).incidents, vec![inc]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_replays_the_recorded_decisions() {
    let site = Site::start(
        Script {
            approve_after: Some(0),
            ..Script::default()
        },
        "[policy]\nmin_history = 0\n",
    )
    .await;
    // Allowance 2: two pre-approved, the third waits for approval.
    site.deploy(false, "success").await;
    site.deploy(false, "failure").await;
    let (_, _, third) = site.deploy(true, "success").await;
    assert_eq!(rule(&third, "allowance")["passed"], false, "{third}");
    site.commit(Utc::now());

    let mark = site.log_len();
    let (code, out, err) = site
        .run(&[
            "policy",
            "simulate",
            "--set",
            "policy.allowance.initial=3",
            "--set",
            "policy.min_success_rate=0.5",
        ])
        .await;
    assert_eq!(code, 0, "{out}\n{err}");
    let sim = json_out(&out);
    assert_eq!(sim["changes"], 3, "{sim}");
    assert_eq!(sim["current_reproduces_recorded"], true, "{sim}");
    let figures = |s: &Value| {
        (
            s["pre_approved"].as_u64().unwrap(),
            s["pre_approved_failed"].as_u64().unwrap(),
            s["needs_approval"].as_u64().unwrap(),
        )
    };
    assert_eq!(figures(&sim["current"]), (2, 1, 1), "{sim}");
    // With an allowance of 3 and a 50% target (the track record was 1 of 2), the third
    // would have been pre-approved.
    assert_eq!(figures(&sim["proposed"]), (3, 1, 0), "{sim}");
    assert_eq!(sim["differences"].as_array().unwrap().len(), 2, "{sim}");
    let requests = site.counts(mark);
    eprintln!(
        "simulate requests (3 changes): {} {requests:#?}",
        total(&requests)
    );
    assert_eq!(site.writes(mark), Vec::<String>::new());
}

/// With a token a later annotation could use, `verify` reads back the facts the change was
/// opened with (one GET of the issue with its facts property) and still verifies once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reads_back_the_facts_to_annotate_a_failure() {
    let site = Site::start(
        Script::default(),
        "[policy]\nmin_history = 0\n[verify]\nwindow = \"1s\"\n",
    )
    .await;
    let (chg, _, _) = site.deploy(false, "success").await;
    let deployed = site.stored(&chg).deployed_at.unwrap();
    site.link_incident(&chg, deployed + Duration::milliseconds(500));
    if let Ok(wait) = (deployed + Duration::milliseconds(1100) - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
    let mark = site.log_len();
    let mut cmd = changegate(site.repo.path());
    cmd.args(["--backend", "jira", "--format", "json", "verify"])
        .env("CHANGEGATE_JIRA_URL", site.server.uri())
        .env("CHANGEGATE_JIRA_USER", USER)
        .env("CHANGEGATE_JIRA_TOKEN", TOKEN)
        .env("CHANGEGATE_JIRA_PROJECT", "CHG")
        .env("GITHUB_TOKEN", "ghs_annotations");
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("runs"))
        .await
        .expect("joined");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let verified = json_out(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(verified["failed_after_deploy"], 1, "{verified}");
    // The re-read before writing, the facts, and the refreshed record for the annotation.
    let requests = site.counts(mark);
    assert_eq!(requests["GET /rest/api/3/issue/{key}"], 3, "{requests:#?}");
    assert!(!stderr.contains("cannot be read"), "{stderr}");
}
