//! `changegate serve` under load, on loopback against a local fake GitHub.
//!
//! Seeds a ledger with 10,000 closed changes of one service, starts the real server on it,
//! and sends 1,000 signed `deployment_protection_rule` deliveries (each its own deployment)
//! at concurrency 50, all pre-approved by the policy. Checks that every delivery is
//! acknowledged and every deployment called back exactly once, and reports the server's
//! peak resident memory.
//!
//! The verdict is a ratio of figures of the same run: the p99 of the acknowledgements
//! against the p50 of `GET /healthz` at the same concurrency just before (what answering a
//! delivery costs beyond answering at all). Absolute times are printed as information.
//!
//! Run: `cargo bench --bench serve`.

#[path = "support/seed.rs"]
mod seed;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use wiremock::matchers::{any, method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const CHANGES: u64 = 10_000;
const DELIVERIES: usize = 1_000;
const CONCURRENCY: usize = 50;
const SECRET: &str = "bench-secret";
const TOKEN: &str = "ghs_benchToken";
/// p99 of the acknowledgements against the p50 of `/healthz`.
const TARGET_ACK: f64 = 5.0;
const TARGET_RSS_KB: u64 = 50 * 1024;
/// Pre-approves every deployment: an allowance no sprint of this run exhausts, a track
/// record the seeded history meets; no annotations (the fake serves the decision only).
const CONFIG: &str = "[policy]\nmin_history = 0\nmin_success_rate = 0.5\n\n[policy.allowance]\ninitial = 5000\nstep = 0\nmax = 5000\nfloor = 5000\n\n[annotate]\nenabled = false\n";

fn key_pem() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/github-app-test-key.pem"),
    )
    .expect("the test App key")
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("hmac");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// One request per item at `CONCURRENCY`, each one's latency.
async fn load<F, Fut>(n: usize, send: F) -> Vec<Duration>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = u16> + Send,
{
    let send = Arc::new(send);
    let next = Arc::new(Mutex::new(0usize));
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (send, next) = (send.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut times = Vec::new();
            loop {
                let i = {
                    let mut n_ = next.lock().expect("counter");
                    let i = *n_;
                    *n_ += 1;
                    i
                };
                if i >= n {
                    return times;
                }
                let started = Instant::now();
                let status = send(i).await;
                times.push(started.elapsed());
                assert!(
                    (200..300).contains(&status),
                    "request {i} answered {status}"
                );
            }
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    all.sort_unstable();
    all
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let bin = Path::new(env!("CARGO_BIN_EXE_changegate"));
    let (dir, ledger) = seed::workdir(bin);
    let started = Instant::now();
    let seeded = seed::seed(
        &ledger,
        CHANGES,
        730,
        chrono::Utc::now() - chrono::Duration::hours(1),
    );
    println!(
        "seeded {} changes of {} in {:.1} s",
        seeded.changes,
        seed::SERVICE_ID,
        started.elapsed().as_secs_f64()
    );

    // The fake GitHub: tokens, the config, and the callbacks it counts by workflow run.
    let gh = MockServer::start().await;
    let repo = format!("/repos/{}", seed::SERVICE_ID);
    Mock::given(method("POST"))
        .and(path_regex(r"^/app/installations/\d+/access_tokens$"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"token": TOKEN})))
        .mount(&gh)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{repo}/contents/.changegate.toml")))
        .respond_with(ResponseTemplate::new(200).set_body_string(CONFIG))
        .mount(&gh)
        .await;
    let callbacks: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    let seen = callbacks.clone();
    Mock::given(method("POST"))
        .and(path_regex(format!(
            r"^{repo}/actions/runs/\d+/deployment_protection_rule$"
        )))
        .respond_with(move |req: &Request| {
            let body: Value = req.body_json().expect("json");
            let state = body["state"].as_str().unwrap_or("report").to_string();
            seen.lock()
                .expect("callbacks")
                .entry(req.url.path().to_string())
                .or_default()
                .push(state);
            ResponseTemplate::new(204)
        })
        .mount(&gh)
        .await;
    let unexpected: Arc<Mutex<Vec<String>>> = Arc::default();
    let stray = unexpected.clone();
    Mock::given(any())
        .respond_with(move |req: &Request| {
            stray
                .lock()
                .expect("stray")
                .push(format!("{} {}", req.method, req.url));
            ResponseTemplate::new(599)
        })
        .with_priority(u8::MAX)
        .mount(&gh)
        .await;

    let mut cmd = seed::clean_command(bin, dir.path());
    cmd.env("GITHUB_API_URL", gh.uri())
        .env("CHANGEGATE_WEBHOOK_SECRET", SECRET)
        .env("CHANGEGATE_GITHUB_APP_ID", "123456")
        .env("CHANGEGATE_GITHUB_APP_PRIVATE_KEY", key_pem())
        .env("CHANGEGATE_LEDGER", &ledger)
        .env("CHANGEGATE_LOG", "warn,changegate=info")
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let errs = errors.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some((_, addr)) = line.split_once("listening on ") {
                let addr = addr.split(char::is_whitespace).next().unwrap_or_default();
                let _ = tx.send(addr.to_string());
            }
            if line.contains("ERROR") || line.contains("WARN") {
                errs.lock().expect("errors").push(line);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("serve listens");
    let base = format!("http://{addr}");
    // changegate's reqwest has no crypto provider of its own: ring, as the binary uses.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();

    // The baseline: /healthz at the same concurrency, just before.
    let (c, b) = (client.clone(), base.clone());
    let health = load(DELIVERIES, move |_| {
        let (c, b) = (c.clone(), b.clone());
        async move {
            let res = c.get(format!("{b}/healthz")).send().await.expect("healthz");
            res.status().as_u16()
        }
    })
    .await;

    // 1,000 deployments of the seeded service, each its own commit and workflow run.
    let template: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "tests/fixtures/reference/github-webhooks/examples/deployment_protection_rule/requested.DERIVED.payload.json",
        ))
        .expect("payload"),
    )
    .expect("json");
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..DELIVERIES)
            .map(|i| {
                let mut p = template.clone();
                p["deployment_callback_url"] = json!(format!(
                    "{}{repo}/actions/runs/{}/deployment_protection_rule",
                    gh.uri(),
                    1_000_000 + i
                ));
                p["deployment"]["sha"] = json!(format!("{:040x}", 0xabc000 + i));
                p["repository"]["full_name"] = json!(seed::SERVICE_ID);
                p["repository"]["name"] = json!(seed::SERVICE);
                p["installation"] = json!({"id": 1});
                serde_json::to_vec(&p).expect("payload")
            })
            .collect(),
    );
    let (c, b) = (client.clone(), base.clone());
    let sent_at = Instant::now();
    let acks = load(DELIVERIES, move |i| {
        let (c, b, bodies) = (c.clone(), b.clone(), bodies.clone());
        async move {
            let body = bodies[i].clone();
            let res = c
                .post(format!("{b}/webhooks/github"))
                .header("x-github-event", "deployment_protection_rule")
                .header("x-github-delivery", format!("bench-{i}"))
                .header("x-hub-signature-256", sign(&body))
                .body(body)
                .send()
                .await
                .expect("delivery");
            res.status().as_u16()
        }
    })
    .await;
    let acked_in = sent_at.elapsed();

    // Every deployment called back, once.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = callbacks.lock().expect("callbacks").len();
        if done >= DELIVERIES || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_in = sent_at.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let exit = child.wait().expect("serve stops");

    let calls = callbacks.lock().expect("callbacks").clone();
    let once = calls.values().filter(|v| v.len() == 1).count();
    let approved = calls
        .values()
        .filter(|v| v.iter().any(|s| s == "approved"))
        .count();
    let stray = unexpected.lock().expect("stray").clone();
    let (ack50, ack99) = (percentile(&acks, 0.5), percentile(&acks, 0.99));
    let (h50, h99) = (percentile(&health, 0.5), percentile(&health, 0.99));
    println!(
        "\n{DELIVERIES} deliveries at concurrency {CONCURRENCY} on a ledger of {CHANGES} changes"
    );
    println!(
        "  acknowledged:        {} of {DELIVERIES} (all 2xx) in {:.2} s",
        acks.len(),
        acked_in.as_secs_f64()
    );
    println!(
        "  ack latency:         p50 {}  p99 {}  max {}",
        ms(ack50),
        ms(ack99),
        ms(acks[acks.len() - 1])
    );
    println!("  GET /healthz:        p50 {}  p99 {}", ms(h50), ms(h99));
    println!(
        "  called back:         {} deployments, {once} exactly once, {approved} approved; all in {:.2} s ({:.0} decisions/s)",
        calls.len(),
        all_in.as_secs_f64(),
        calls.len() as f64 / all_in.as_secs_f64()
    );
    println!(
        "  server peak RSS:     {:.1} MB (target ≤ {} MB)",
        rss_kb as f64 / 1024.0,
        TARGET_RSS_KB / 1024
    );
    println!("  exit on SIGTERM:     {:?}", exit.code());
    let ratio = ack99.as_secs_f64() / h50.as_secs_f64().max(1e-9);
    let ack_met = ratio <= TARGET_ACK;
    println!(
        "\n  ratio p99 ack / p50 healthz: {ratio:.2}× (target ≤ {TARGET_ACK}×)  {}",
        if ack_met { "met" } else { "MISSED" }
    );
    let logged = errors.lock().expect("errors").clone();
    for line in logged.iter().take(5) {
        println!("  server said: {line}");
    }
    let exactly_once = calls.len() == DELIVERIES && once == DELIVERIES && approved == DELIVERIES;
    let rss_met = rss_kb <= TARGET_RSS_KB;
    if !stray.is_empty() {
        println!("  unexpected requests: {:?}", &stray[..stray.len().min(5)]);
    }
    println!(
        "\nverdict: every delivery answered exactly once: {}; peak RSS: {}; acknowledgement: {}",
        if exactly_once { "yes" } else { "NO" },
        if rss_met { "met" } else { "MISSED" },
        if ack_met { "met" } else { "MISSED" }
    );
    // A wrong answer is a failure of the run; a missed speed or memory target is a figure.
    if !exactly_once || !stray.is_empty() || exit.code() != Some(0) {
        std::process::exit(1);
    }
}
