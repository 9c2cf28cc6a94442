//! A stateful fake of the GitLab REST API for `changegate serve` (api-contracts.md §4.1,
//! §4.3; api-contracts-2.md §3.6-3.8): one project, its deployments (some `blocked`), the
//! default branch's `.changegate.toml`, the bot user, commit statuses, and deployment
//! approvals. Built on the one harness: any other request fails the test, and the fake
//! flags what GitLab would refuse (a wrong token, an answer to a deployment not blocked, a
//! second answer by the same user).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, Request, ResponseTemplate};

use super::remote::{Remote, Watch};

pub const BOT_TOKEN: &str = "glpat-serveBotToken0123456789";
pub const PROJECT_ID: u64 = 42;
pub const PROJECT_PATH: &str = "group/app";
pub const SHA: &str = "a5c3f9d1e2b4c6d8e0f1a3b5c7d9e1f3a5b7c9d1";

#[derive(Default)]
pub struct GlState {
    /// The default branch's `.changegate.toml`; `None`: no such file.
    pub config: Option<String>,
    /// Deployments by id (GitLab's deployment objects).
    pub deployments: Vec<Value>,
    /// Every approval body, with the deployment it answered, in order.
    pub approvals: Vec<(u64, Value)>,
    pub statuses: Vec<Value>,
    /// The deployments listing answers 500 while set (GitLab having a bad day).
    pub listing_fails: bool,
    /// The project's milestones and issues (`sync` on issue hooks).
    pub milestones: Vec<Value>,
    pub issues: Vec<Value>,
}

pub struct FakeGitLab {
    pub server: Remote,
    pub state: Arc<Mutex<GlState>>,
}

/// A deployment to `environment` of [`SHA`], in `status`.
pub fn deployment(id: u64, environment: &str, status: &str) -> Value {
    json!({
        "id": id, "iid": id, "ref": "main", "sha": SHA, "status": status,
        "created_at": "2026-12-05T10:00:00.000Z", "updated_at": "2026-12-05T10:00:00.000Z",
        "user": {"id": 3, "username": "dev", "name": "Dev"},
        "environment": {"id": 9, "name": environment, "external_url": null},
        "deployable": {"id": 77, "status": "manual", "stage": "deploy", "name": "deploy",
            "ref": "main", "tag": false,
            "commit": {"id": SHA, "short_id": &SHA[..8], "title": "Ship it",
                "message": "Ship it\n\nRefs #12\n", "author_name": "Dev",
                "author_email": "dev@example.com", "created_at": "2026-12-05T09:58:00.000+00:00"},
            "pipeline": {"id": 500, "sha": SHA, "ref": "main", "status": "running",
                "web_url": "https://gitlab.example/group/app/-/pipelines/500"}},
        "pending_approval_count": 1, "approvals": []
    })
}

fn authed(watch: &Watch, req: &Request) -> bool {
    let ok = req
        .headers
        .get("private-token")
        .and_then(|v| v.to_str().ok())
        == Some(BOT_TOKEN);
    if !ok {
        watch.flag(format!("no bot token on {} {}", req.method, req.url.path()));
    }
    ok
}

fn unauthorized() -> ResponseTemplate {
    ResponseTemplate::new(401).set_body_json(json!({"message": "401 Unauthorized"}))
}

impl FakeGitLab {
    pub async fn start(config: Option<&str>, deployments: Vec<Value>) -> FakeGitLab {
        let server = Remote::start().await;
        let state = Arc::new(Mutex::new(GlState {
            config: config.map(str::to_string),
            deployments,
            ..GlState::default()
        }));
        let api = "/api/v4";
        let by_id = format!("{api}/projects/{PROJECT_ID}");
        let by_path = format!("{api}/projects/group%2Fapp");
        let watch = server.watch();
        Mock::given(method("GET"))
            .and(path(format!("{api}/user")))
            .respond_with(move |req: &Request| {
                if !authed(&watch, req) {
                    return unauthorized();
                }
                ResponseTemplate::new(200)
                    .set_body_json(json!({"id": 7, "username": "changegate-bot"}))
            })
            .mount(&server)
            .await;
        let web = server.uri();
        let watch = server.watch();
        Mock::given(method("GET"))
            .and(path(by_id.clone()))
            .respond_with(move |req: &Request| {
                if !authed(&watch, req) {
                    return unauthorized();
                }
                ResponseTemplate::new(200).set_body_json(json!({
                    "id": PROJECT_ID, "path_with_namespace": PROJECT_PATH,
                    "default_branch": "main", "web_url": format!("{web}/{PROJECT_PATH}")
                }))
            })
            .mount(&server)
            .await;
        let (s, watch) = (state.clone(), server.watch());
        Mock::given(method("GET"))
            .and(path(format!(
                "{by_id}/repository/files/.changegate.toml/raw"
            )))
            .respond_with(move |req: &Request| {
                if !authed(&watch, req) {
                    return unauthorized();
                }
                let on_default = req
                    .url
                    .query_pairs()
                    .any(|(k, v)| k == "ref" && v == "main");
                match (&s.lock().unwrap().config, on_default) {
                    (Some(text), true) => ResponseTemplate::new(200).set_body_string(text.clone()),
                    _ => ResponseTemplate::new(404)
                        .set_body_json(json!({"message": "404 File Not Found"})),
                }
            })
            .mount(&server)
            .await;
        let (s, watch) = (state.clone(), server.watch());
        Mock::given(method("GET"))
            .and(path(format!("{by_id}/deployments")))
            .respond_with(move |req: &Request| {
                if !authed(&watch, req) {
                    return unauthorized();
                }
                if s.lock().unwrap().listing_fails {
                    return ResponseTemplate::new(500)
                        .set_body_json(json!({"message": "500 Internal Server Error"}));
                }
                let mut status = None;
                for (k, v) in req.url.query_pairs() {
                    match k.as_ref() {
                        "status" => status = Some(v.to_string()),
                        "page" | "per_page" => {}
                        other => watch.flag(format!("unknown deployments query term {other}")),
                    }
                }
                let list: Vec<Value> = s
                    .lock()
                    .unwrap()
                    .deployments
                    .iter()
                    .filter(|d| status.as_ref().is_none_or(|st| d["status"] == **st))
                    .cloned()
                    .collect();
                ResponseTemplate::new(200)
                    .insert_header("x-next-page", "")
                    .set_body_json(list)
            })
            .mount(&server)
            .await;
        let (s, watch) = (state.clone(), server.watch());
        Mock::given(method("GET"))
            .and(path_regex(format!(r"^{by_id}/deployments/\d+$")))
            .respond_with(move |req: &Request| {
                if !authed(&watch, req) {
                    return unauthorized();
                }
                let id: u64 = req.url.path().rsplit('/').next().unwrap().parse().unwrap();
                match s.lock().unwrap().deployments.iter().find(|d| d["id"] == id) {
                    Some(d) => ResponseTemplate::new(200).set_body_json(d.clone()),
                    None => ResponseTemplate::new(404)
                        .set_body_json(json!({"message": "404 Not found"})),
                }
            })
            .mount(&server)
            .await;
        let (s, watch) = (state.clone(), server.watch());
        Mock::given(method("POST"))
            .and(path_regex(format!(r"^{by_id}/deployments/\d+/approval$")))
            .respond_with(move |req: &Request| {
                if !authed(&watch, req) {
                    return unauthorized();
                }
                let id: u64 = req
                    .url
                    .path()
                    .split('/')
                    .nth_back(1)
                    .unwrap()
                    .parse()
                    .unwrap();
                let body: Value = req.body_json().unwrap();
                let mut st = s.lock().unwrap();
                let status = body["status"].as_str().unwrap_or_default().to_string();
                if status != "approved" && status != "rejected" {
                    watch.flag(format!("approval with status {status:?}"));
                }
                if st.approvals.iter().any(|(d, _)| *d == id) {
                    watch.flag(format!("deployment {id} answered twice by the bot"));
                }
                let Some(d) = st.deployments.iter_mut().find(|d| d["id"] == id) else {
                    return ResponseTemplate::new(404)
                        .set_body_json(json!({"message": "404 Not found"}));
                };
                if d["status"] != "blocked" {
                    watch.flag(format!("approval of deployment {id}, which is not blocked"));
                }
                // One approval is all the rule needs: the job runs, or is refused.
                d["status"] = json!(if status == "approved" {
                    "running"
                } else {
                    "canceled"
                });
                st.approvals.push((id, body.clone()));
                ResponseTemplate::new(201).set_body_json(json!({
                    "user": {"id": 7, "username": "changegate-bot"}, "status": status,
                    "created_at": "2026-12-05T10:01:00.000Z", "comment": body["comment"]
                }))
            })
            .mount(&server)
            .await;
        // The step's annotations: the merge requests of the commit, the commit status.
        Mock::given(method("GET"))
            .and(path(format!(
                "{by_path}/repository/commits/{SHA}/merge_requests"
            )))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
            .mount(&server)
            .await;
        let (s, watch) = (state.clone(), server.watch());
        Mock::given(method("POST"))
            .and(path(format!("{by_path}/statuses/{SHA}")))
            .respond_with(move |req: &Request| {
                if !authed(&watch, req) {
                    return unauthorized();
                }
                let body: Value = req.body_json().unwrap();
                s.lock().unwrap().statuses.push(body.clone());
                ResponseTemplate::new(201).set_body_json(body)
            })
            .mount(&server)
            .await;
        // Milestones and issues (api-contracts-2.md §3.1, §3.3), by id or by path.
        let (s, watch) = (state.clone(), server.watch());
        Mock::given(method("GET"))
            .and(path_regex(format!(
                r"^{api}/projects/({PROJECT_ID}|group%2Fapp)/(milestones|issues)$"
            )))
            .respond_with(move |req: &Request| {
                if !authed(&watch, req) {
                    return unauthorized();
                }
                let q: std::collections::BTreeMap<String, String> =
                    req.url.query_pairs().into_owned().collect();
                let st = s.lock().unwrap();
                if req.url.path().ends_with("/milestones") {
                    return ResponseTemplate::new(200).set_body_json(&st.milestones);
                }
                let list: Vec<Value> = match (
                    q.get("state").map(String::as_str),
                    q.get("milestone"),
                    q.get("scope").map(String::as_str),
                ) {
                    (Some("opened"), None, Some("all")) => st
                        .issues
                        .iter()
                        .filter(|i| i["state"] == "opened")
                        .cloned()
                        .collect(),
                    (None, Some(m), Some("all")) => st
                        .issues
                        .iter()
                        .filter(|i| i["milestone"]["title"].as_str() == Some(m.as_str()))
                        .cloned()
                        .collect(),
                    _ => {
                        watch.flag(format!("issues listed with {q:?}"));
                        Vec::new()
                    }
                };
                ResponseTemplate::new(200).set_body_json(list)
            })
            .mount(&server)
            .await;
        FakeGitLab { server, state }
    }

    /// `CHANGEGATE_GITLAB_URL` for this fake.
    pub fn url(&self) -> String {
        self.server.uri()
    }

    pub fn approvals(&self) -> Vec<(u64, Value)> {
        self.state.lock().unwrap().approvals.clone()
    }

    /// Waits until `done` holds of the approvals (or fails the test after 30s).
    pub async fn until(
        &self,
        what: &str,
        done: impl Fn(&[(u64, Value)]) -> bool,
    ) -> Vec<(u64, Value)> {
        let started = Instant::now();
        loop {
            let approvals = self.approvals();
            if done(&approvals) {
                return approvals;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no {what}: {approvals:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A Deployment Hook payload (api-contracts-2.md §3.8) for deployment `id` in `status`.
pub fn deployment_hook(id: u64, status: &str) -> Value {
    json!({
        "object_kind": "deployment",
        "status": status,
        "status_changed_at": "2026-12-05 10:02:00 +0000",
        "deployment_id": id,
        "deployable_id": 77,
        "deployable_url": "https://gitlab.example/group/app/-/jobs/77",
        "environment": "production",
        "environment_tier": "production",
        "environment_slug": "production",
        "environment_external_url": null,
        "project": {"id": PROJECT_ID, "name": "app", "path_with_namespace": PROJECT_PATH,
            "default_branch": "main", "web_url": "https://gitlab.example/group/app"},
        "short_sha": &SHA[..8],
        "user": {"id": 3, "name": "Dev", "username": "dev"},
        "user_url": "https://gitlab.example/dev",
        "commit_url": format!("https://gitlab.example/group/app/-/commit/{SHA}"),
        "commit_title": "Ship it"
    })
}
