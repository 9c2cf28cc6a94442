//! The history the policy reads, in two requests whatever its size: the most recent closed
//! changes (and, from `X-Total-Count`, how many there are), and one Aggregate API call that
//! tallies changes per decision day, type, state and close code.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Result, bail};
use chrono::{TimeZone, Utc};
use reqwest::Method;
use serde_json::Value;

use super::client::Body;
use super::raw::*;
use super::{STATS, ServiceNow, TABLE};
use crate::domain::{CorrelationKey, History, Outcome, SprintTally};
use crate::itsm::HistoryQuery;

#[derive(Clone)]
pub(super) struct Recent {
    prefix: String,
    /// `(correlation_id, close_code)`, newest closed first; one more than the window.
    rows: Vec<(String, String)>,
    total: Option<u64>,
}

impl ServiceNow {
    /// The most recent closed changes of a service+environment (one more than the window),
    /// and the total. Cached: `last_change_sha` and `history` share it.
    pub(super) async fn recent(&self, prefix: &str) -> Result<Recent> {
        if let Some(r) = self.cache().recent.clone().filter(|r| r.prefix == prefix) {
            return Ok(r);
        }
        let codes = self.outcome_codes();
        let query = format!(
            "correlation_idSTARTSWITH{}^state={CLOSED}^close_codeIN{}^ORDERBYDESCclosed_at^ORDERBYDESCnumber",
            q(prefix),
            q(&codes.join(","))
        );
        let params = [
            ("sysparm_query", query),
            ("sysparm_fields", "correlation_id,close_code".to_string()),
            ("sysparm_limit", (self.window + 1).to_string()),
            ("sysparm_exclude_reference_link", "true".to_string()),
        ];
        let reply = self
            .api
            .call(Method::GET, TABLE, &params, Body::None)
            .await?;
        let rows = Self::list(&reply)?
            .into_iter()
            .map(|r| {
                (
                    r.get("correlation_id").to_string(),
                    r.get("close_code").to_string(),
                )
            })
            .collect();
        let recent = Recent {
            prefix: prefix.to_string(),
            rows,
            total: reply.total_count(),
        };
        self.cache().recent = Some(recent.clone());
        Ok(recent)
    }

    pub(super) async fn history_of(&self, q_: &HistoryQuery<'_>) -> Result<History> {
        let prefix = key_prefix(q_.service_id, q_.environment);
        let exclude = q_.exclude_key.map(str::to_string);
        let exclude_fitted = q_.exclude_key.map(|k| {
            // The key as stored: the same fitting the writer applies.
            if k.len() <= KEY_MAX {
                k.to_string()
            } else {
                let sha = k.rsplit(':').next().unwrap_or_default();
                CorrelationKey::new(q_.service_id, q_.environment, sha).fitted(KEY_MAX)
            }
        });
        let recent = self.recent(&prefix).await?;
        let skip =
            |key: &str| exclude_fitted.as_deref() == Some(key) || exclude.as_deref() == Some(key);
        let excluded = recent.rows.iter().filter(|(k, _)| skip(k)).count() as u64;
        let outcomes: Vec<Outcome> = recent
            .rows
            .iter()
            .filter(|(k, _)| !skip(k))
            .take(q_.window as usize)
            .map(|(_, code)| {
                if *code == self.cfg.close_code_failure {
                    Outcome::Failure
                } else {
                    Outcome::Success
                }
            })
            .collect();
        let closed_total = recent
            .total
            .map(|t| t.saturating_sub(excluded))
            .unwrap_or(outcomes.len() as u64);

        let from = q_.calendar.start_of(q_.from_sprint);
        let mut query = format!(
            "correlation_idSTARTSWITH{}^sys_created_on>={}",
            q(&prefix),
            sn_time(from)
        );
        if let Some(k) = &exclude_fitted {
            query.push_str(&format!("^correlation_id!={}", q(k)));
        }
        let params = [
            ("sysparm_query", query),
            ("sysparm_count", "true".to_string()),
            (
                "sysparm_group_by",
                "correlation_display,type,state,close_code".to_string(),
            ),
        ];
        let (body, reply): (Value, _) = self.api.get(STATS, &params).await?;
        let groups = match body.get("result") {
            Some(Value::Array(groups)) => groups.clone(),
            // No group matched: some releases answer a bare `{"stats": {...}}`.
            Some(Value::Object(_)) => Vec::new(),
            _ => bail!("ServiceNow answered {} without a `result`", reply.what),
        };
        let current = q_.calendar.index_of(q_.now);
        let mut sprints: BTreeMap<i64, SprintTally> = BTreeMap::new();
        for g in &groups {
            let count = g
                .pointer("/stats/count")
                .map(scalar)
                .and_then(|c| c.parse::<u32>().ok())
                .unwrap_or(0);
            let mut by: HashMap<&str, String> = HashMap::new();
            for f in g
                .get("groupby_fields")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let (Some(field), Some(value)) =
                    (f.get("field").and_then(Value::as_str), f.get("value"))
                {
                    by.insert(field, scalar(value));
                }
            }
            let Some(day) = by.get("correlation_display").and_then(|d| display_day(d)) else {
                continue;
            };
            let sprint = q_
                .calendar
                .index_of(Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN)));
            if sprint < q_.from_sprint || sprint > current {
                continue;
            }
            let tally = sprints.entry(sprint).or_default();
            let state = by.get("state").and_then(|s| s.parse::<i64>().ok());
            let code = by.get("close_code").map(String::as_str).unwrap_or("");
            match state {
                Some(CLOSED) if code == self.cfg.close_code_failure => tally.failed += count,
                Some(CLOSED) if !code.is_empty() => tally.succeeded += count,
                Some(CANCELED) => tally.cancelled += count,
                _ => {}
            }
            match by.get("type").map(String::as_str) {
                Some("standard") => tally.pre_approved += count,
                Some("emergency") => tally.emergency += count,
                _ => {}
            }
        }
        Ok(History {
            closed_total,
            recent: outcomes,
            sprints,
        })
    }

    /// The commit of the last change closed for this service and environment (the last
    /// deploy), from the same query the history's track record uses.
    pub(super) async fn last_closed_sha(
        &self,
        service_id: &str,
        environment: &str,
    ) -> Result<Option<String>> {
        let recent = self.recent(&key_prefix(service_id, environment)).await?;
        Ok(recent
            .rows
            .first()
            .and_then(|(key, _)| key.rsplit(':').next())
            .filter(|sha| !sha.is_empty())
            .map(str::to_string))
    }
}
