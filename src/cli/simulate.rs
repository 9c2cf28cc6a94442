//! `policy simulate`: replay the recorded history under other policy values and show it
//! side by side with the current policy — the "check" that makes tuning a decision backed
//! by data.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;

use super::change::{self, CommitArgs};
use super::{Ctx, Exit};
use crate::config::ConfigFile;
use crate::domain::simulate::{self, SimSummary};
use crate::domain::{DecisionKind, Policy};
use crate::env;
use crate::itsm;
use crate::output::console;
use crate::settings::{Format, GlobalArgs};

#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub change: CommitArgs,
    /// A policy value to try, as a config key and a TOML value, e.g. `policy.allowance.step=3`
    /// or `policy.min_success_rate=0.95` (repeatable). With `--config FILE`, the values are
    /// applied on top of that file; the current policy is the usual config.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

/// A config key whose value differs between the two policies.
#[derive(Debug, Serialize)]
struct Difference {
    key: String,
    current: String,
    proposed: String,
}

/// One change: its recorded decision and the two replayed ones.
#[derive(Debug, Serialize)]
struct Decided {
    change_id: String,
    sprint: i64,
    recorded: DecisionKind,
    current: DecisionKind,
    proposed: DecisionKind,
}

#[derive(Debug, Serialize)]
struct Simulation {
    service: String,
    environment: String,
    changes: usize,
    differences: Vec<Difference>,
    /// Replaying under the current policy gives every recorded decision, rule for rule.
    current_reproduces_recorded: bool,
    current: SimSummary,
    proposed: SimSummary,
    /// Every change, in decision order.
    decisions: Vec<Decided>,
}

/// Sets `key` (dotted) to `value` (a TOML value; anything that does not parse as one is a string).
fn apply_set(table: &mut toml::Table, assignment: &str) -> Result<()> {
    let (key, value) = assignment.split_once('=').ok_or_else(|| {
        anyhow!("--set {assignment:?}: expected KEY=VALUE, e.g. policy.allowance.step=3")
    })?;
    let (key, value) = (key.trim(), value.trim());
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let parts: Vec<&str> = key.split('.').map(str::trim).collect();
    let Some((last, path)) = parts
        .split_last()
        .filter(|(l, p)| !l.is_empty() && p.iter().all(|s| !s.is_empty()))
    else {
        bail!("--set {assignment:?}: the key must be a config key such as policy.allowance.step");
    };
    let mut cur = table;
    for part in path {
        cur = cur
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| anyhow!("--set {assignment:?}: `{part}` is a value, not a table"))?;
    }
    cur.insert((*last).to_string(), parsed);
    Ok(())
}

/// The proposed config: `base` with every `--set` applied, validated like a config file
/// after each one, so that an error names the `--set` argument that caused it.
fn proposed_config(base: &ConfigFile, sets: &[String]) -> Result<ConfigFile> {
    let mut table = toml::Table::try_from(base).context("cannot restate the config as TOML")?;
    let mut proposed = ConfigFile::from_set(table.clone(), "")?;
    for set in sets {
        apply_set(&mut table, set)?;
        proposed = ConfigFile::from_set(table.clone(), set)?;
    }
    Ok(proposed)
}

fn policy_of(file: &ConfigFile, mode: crate::domain::Mode) -> Policy {
    Policy {
        mode,
        params: file.policy.clone(),
        risk: file.risk.clone(),
        evidence: file.evidence.clone(),
        freezes: file.freezes.clone(),
        separate_author: file.approval.separate_author,
    }
}

/// Dotted keys and values of a config, for the list of what the proposal changes.
fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

fn differences(current: &ConfigFile, proposed: &ConfigFile) -> Result<Vec<Difference>> {
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    for (file, out) in [(current, &mut a), (proposed, &mut b)] {
        let table = toml::Table::try_from(file)?;
        for section in ["policy", "risk", "evidence", "freeze"] {
            if let Some(v) = table.get(section) {
                flatten(section, v, out);
            }
        }
    }
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    Ok(keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| Difference {
            key: k.clone(),
            current: a.get(k).cloned().unwrap_or_else(|| "(unset)".into()),
            proposed: b.get(k).cloned().unwrap_or_else(|| "(unset)".into()),
        })
        .collect())
}

pub async fn run(ctx: &Ctx<'_>, global: &GlobalArgs, args: &SimulateArgs) -> Result<Exit> {
    let s = ctx.settings;
    // The current policy is the usual config (CHANGEGATE_CONFIG or .changegate.toml); a
    // `--config` flag names the proposal's base instead. The settings were resolved with the
    // flag's file, so the current ones derive from them with the usual file in its place
    // (same flags, same environment snapshot).
    let usual = s.env.get_os(env::CONFIG).map(Path::new);
    let flagged = global
        .config
        .clone()
        .filter(|p| usual.is_none_or(|e| e != p));
    let current_settings = if flagged.is_some() {
        s.with_config(global, ctx.workdir, usual)?
    } else {
        s.clone()
    };
    let current_file = &current_settings.file;
    let proposed_file = proposed_config(
        if flagged.is_some() {
            &s.file
        } else {
            current_file
        },
        &args.sets,
    )?;
    if proposed_file.sprint != current_file.sprint {
        bail!(
            "the proposed policy changes [sprint]; simulate compares policies over the same sprints, so keep the sprint calendar"
        );
    }
    let current_policy = policy_of(current_file, current_settings.mode());
    let proposed_policy = policy_of(&proposed_file, current_settings.mode());
    let calendar = current_settings.calendar;

    let backend = itsm::connect(&current_settings)?;
    let facts = change::facts(ctx, backend.as_ref(), &(&args.change).into()).await?;
    let recorded = backend
        .recorded_changes(&facts.service_id, &facts.environment)
        .await?;
    let now = calendar.index_of(s.now);
    let current = simulate::replay(&recorded, &current_policy, calendar);
    let proposed = simulate::replay(&recorded, &proposed_policy, calendar);
    let decisions = current
        .iter()
        .zip(&proposed)
        .map(|(c, p)| Decided {
            change_id: c.change.id.clone(),
            sprint: c.decision.sprint,
            recorded: c.change.decision.kind,
            current: c.decision.kind,
            proposed: p.decision.kind,
        })
        .collect();
    let sim = Simulation {
        service: facts.service.clone(),
        environment: facts.environment.clone(),
        changes: recorded.len(),
        differences: differences(current_file, &proposed_file)?,
        current_reproduces_recorded: current.iter().all(|r| r.reproduces()),
        current: simulate::summarize(&current, &current_policy, calendar, now),
        proposed: simulate::summarize(&proposed, &proposed_policy, calendar, now),
        decisions,
    };
    match s.format {
        Format::Json => console::json(&sim)?,
        _ => console::human(&text(&sim), s.github_actions())?,
    }
    Ok(Exit::Pass)
}

fn text(sim: &Simulation) -> String {
    let (c, p) = (&sim.current, &sim.proposed);
    let mut out = format!(
        "{} → {}: {} recorded decisions replayed under the current and the proposed policy\n",
        sim.service, sim.environment, sim.changes
    );
    if sim.differences.is_empty() {
        out.push_str("  proposed: no policy value differs from the current policy (use --set KEY=VALUE or --config FILE)\n");
    }
    for d in &sim.differences {
        out.push_str(&format!(
            "  proposed: {} = {} (current {})\n",
            d.key, d.proposed, d.current
        ));
    }
    out.push_str(&format!(
        "\n  {:<36} {:>8} {:>9}\n",
        "", "current", "proposed"
    ));
    let rows = [
        ("pre-approved", c.pre_approved, p.pre_approved),
        (
            "  of which failed",
            c.pre_approved_failed,
            p.pre_approved_failed,
        ),
        (
            "  of which never deployed (unknown)",
            c.pre_approved_unknown,
            p.pre_approved_unknown,
        ),
        ("needs approval", c.needs_approval, p.needs_approval),
        ("blocked", c.blocked, p.blocked),
        ("emergency", c.emergency, p.emergency),
    ];
    for (label, a, b) in rows {
        out.push_str(&format!("  {label:<36} {a:>8} {b:>9}\n"));
    }
    out.push_str(&format!(
        "\n  {:<8} {:>21}  {:>21}  {:>21}\n",
        "sprint", "allowance", "pre-approved", "failed of those"
    ));
    out.push_str(&format!(
        "  {:<8} {:>10} {:>10}  {:>10} {:>10}  {:>10} {:>10}\n",
        "", "current", "proposed", "current", "proposed", "current", "proposed"
    ));
    let proposed: BTreeMap<i64, _> = p.sprints.iter().map(|s| (s.sprint, s)).collect();
    for cs in &c.sprints {
        let ps = proposed
            .get(&cs.sprint)
            .copied()
            .copied()
            .unwrap_or_default();
        out.push_str(&format!(
            "  {:<8} {:>10} {:>10}  {:>10} {:>10}  {:>10} {:>10}\n",
            format!("S{}", cs.sprint),
            cs.allowance,
            ps.allowance,
            cs.pre_approved,
            ps.pre_approved,
            cs.pre_approved_failed,
            ps.pre_approved_failed
        ));
    }
    let differently: Vec<&Decided> = sim
        .decisions
        .iter()
        .filter(|d| d.current != d.proposed)
        .collect();
    if !differently.is_empty() {
        out.push_str(&format!(
            "\n  decided differently ({}):\n",
            differently.len()
        ));
        for d in differently.iter().take(20) {
            out.push_str(&format!(
                "    {} (S{}): {} → {}\n",
                d.change_id, d.sprint, d.current, d.proposed
            ));
        }
        if differently.len() > 20 {
            out.push_str(&format!(
                "    … and {} more (--format json lists all)\n",
                differently.len() - 20
            ));
        }
    }
    out.push_str(&if sim.current_reproduces_recorded {
        format!("\n  the current policy reproduces all {} recorded decisions exactly\n", c.decided)
    } else {
        format!(
            "\n  note: the current policy reproduces {} of {} recorded decisions; the policy (or changegate) changed since the others were made\n",
            c.same_as_recorded, c.decided
        )
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_apply_typed_values_and_reject_unknown_keys() {
        let base = ConfigFile::default();
        let c = proposed_config(
            &base,
            &[
                "policy.allowance.step=3".into(),
                "policy.min_success_rate = 0.95".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.policy.allowance.step, 3);
        assert_eq!(c.policy.min_success_rate, 0.95);
        assert_eq!(c.policy.allowance.initial, base.policy.allowance.initial);
        let e = proposed_config(&base, &["policy.allowance.stepp=3".into()]).unwrap_err();
        assert!(
            format!("{e:#}").starts_with("invalid --set \"policy.allowance.stepp=3\": "),
            "{e:#}"
        );
        assert!(!format!("{e:#}").contains("line"), "{e:#}");
        let e = proposed_config(&base, &["policy.window=3".into(), "policy.window=0".into()])
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("\"policy.window=0\"")
                && format!("{e:#}").contains("`policy.window`"),
            "{e:#}"
        );
        assert!(proposed_config(&base, &["policy.min_success_rate=1.5".into()]).is_err());
        assert!(proposed_config(&base, &["nokey".into()]).is_err());
        let d = differences(&base, &c).unwrap();
        let keys: Vec<&str> = d.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(keys, ["policy.allowance.step", "policy.min_success_rate"]);
    }

    #[test]
    fn the_whole_config_survives_the_round_trip() {
        let text = r#"
service = "payments-api"
[sprint]
start = "2026-01-05"
length_days = 14
[risk]
max_lines_changed = 800
sensitive_paths = ["migrations/**"]
[approval]
timeout = "4h"
[[freeze]]
from = "2026-12-21T00:00:00Z"
to = "2027-01-04T00:00:00Z"
reason = "year-end freeze"
"#;
        let base = ConfigFile::parse(text, Path::new("x.toml")).unwrap();
        assert_eq!(proposed_config(&base, &[]).unwrap(), base);
    }
}
