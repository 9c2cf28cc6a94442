//! The history the policy reads, in two requests whatever its size: the most recent closed
//! changes (and, from `X-Total-Count`, how many there are), and one Aggregate API call that
//! tallies changes per decision day, type, state and close code.
//!
//! A gate reads the most recent closed changes in the same query that looks its own change
//! up ([`ServiceNow::survey`]): the records holding the key, open ones first, then the last
//! closed changes of the service and environment. That query also tells the standard change
//! template's sys_id when a recent standard change was made from it.

use crate::itsm::TrackRecord;
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};

use anyhow::{Result, bail};
use chrono::{TimeZone, Utc};
use reqwest::Method;
use serde_json::Value;

use super::client::Body;
use super::codec::{
    CANCELED, CLOSED, KEY_MAX, Raw, display_day, is_sys_id, key_prefix, q, scalar, sn_time,
};
use super::{READ_FIELDS, STATS, ServiceNow, TABLE};
use crate::domain::{CorrelationKey, History, Outcome, SprintTally};
use crate::itsm::{HistoryQuery, Lookup, Since};

/// Dot-walked fields naming the standard change template a change was made from.
const TEMPLATE_ID_FIELD: &str = "std_change_producer_version.std_change_producer";
const TEMPLATE_NAME_FIELD: &str = "std_change_producer_version.std_change_producer.name";
const TEMPLATE_ACTIVE_FIELD: &str = "std_change_producer_version.std_change_producer.active";

/// What a lookup of a key carries for `open` and `history` (see [`crate::itsm::Lookup`]):
/// the record holding the key, and the recent closed changes when they were read with it.
#[derive(Clone)]
pub(super) struct Found {
    /// The oldest record holding the key: the change.
    pub(super) raw: Option<Raw>,
    /// The service's and environment's recent closed changes, when the same read held them.
    pub(super) recent: Option<Recent>,
    /// Younger records holding the key beside the change (two runs raced to create it):
    /// `record_outcome` drops them once the deploy is over.
    pub(super) duplicates: Vec<Raw>,
}

#[derive(Clone)]
pub(super) struct Recent {
    prefix: String,
    /// `(correlation_id, close_code)`, newest closed first; one more than the window.
    rows: Vec<(String, String)>,
    total: Option<u64>,
}

impl ServiceNow {
    /// The most recent closed changes of a service+environment (one more than the window),
    /// and the total. `last_change_sha` hands what it read on to `history` in a lookup.
    pub(super) async fn recent(&self, prefix: &str) -> Result<Recent> {
        let codes = self.outcome_codes();
        let query = format!(
            "correlation_idSTARTSWITH{}^state={CLOSED}^close_codeIN{}^ORDERBYDESCclosed_at^ORDERBYDESCnumber",
            q(prefix),
            q(&codes.join(","))
        );
        let params = Self::list_query(
            query,
            "correlation_id,close_code".to_string(),
            self.window + 1,
        );
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
        Ok(Recent {
            prefix: prefix.to_string(),
            rows,
            total: reply.total_count(),
        })
    }

    /// One query for what a gate reads before it decides: the records holding `key` and the
    /// last closed changes of its service and environment. Encoded queries bind `^OR` to the
    /// term before it, so the query reads `prefix AND (closed OR key) AND (close code OR key)`;
    /// open records sort first (`active` descending), so the key's open record is always on
    /// the page. Returns the key's record with the recent closed changes, which are left to
    /// their own query when the page cannot hold the window (many records under one key);
    /// learns the template.
    ///
    /// A closed or cancelled record of the key that is older than the page is not seen: the
    /// gate then decides anew, and the re-read after its create finds the older record and
    /// carries on with it (see `settle`).
    pub(super) async fn survey(&self, key: &CorrelationKey) -> Result<Found> {
        let fitted = key.fitted(KEY_MAX);
        let prefix = key_prefix(&key.service_id, &key.environment);
        let codes = self.outcome_codes();
        let query = format!(
            "correlation_idSTARTSWITH{p}^state={CLOSED}^ORcorrelation_id={k}^close_codeIN{c}^ORcorrelation_id={k}\
             ^ORDERBYDESCactive^ORDERBYDESCclosed_at^ORDERBYDESCnumber",
            p = q(&prefix),
            k = q(&fitted),
            c = q(&codes.join(",")),
        );
        let by_name = self.template_name().filter(|n| !is_sys_id(n));
        let mut fields = format!("{READ_FIELDS},active");
        if by_name.is_some() && self.cache().template.is_none() {
            for f in [
                TEMPLATE_ID_FIELD,
                TEMPLATE_NAME_FIELD,
                TEMPLATE_ACTIVE_FIELD,
            ] {
                fields.push(',');
                fields.push_str(f);
            }
        }
        // The key's records (rarely more than one) and one more closed change than the window.
        let limit = self.window + 4;
        let params = Self::list_query(query, fields, limit);
        let reply = self
            .api
            .call(Method::GET, TABLE, &params, Body::None)
            .await?;
        let rows = Self::list(&reply)?;
        let closed = |r: &Raw| r.state() == Some(CLOSED) && codes.contains(&r.get("close_code"));
        let mut mine: Vec<&Raw> = rows
            .iter()
            .filter(|r| r.get("correlation_id") == fitted)
            .collect();
        // Oldest first: the oldest record holding the key is the change.
        mine.sort_by(|a, b| {
            (a.get("sys_created_on"), a.number()).cmp(&(b.get("sys_created_on"), b.number()))
        });
        Self::warn_duplicates(&fitted, &mine);
        let found = mine.first().map(|r| (*r).clone());
        let not_closed = mine.iter().filter(|r| !closed(r)).count() as u64;
        let others = rows
            .iter()
            .filter(|r| closed(r) && r.get("correlation_id") != fitted)
            .count();
        let complete = rows.len() < limit as usize || others >= self.window as usize;
        if let Some(name) = by_name {
            self.learn_template(&rows, name);
        }
        for raw in &rows {
            self.remember(raw);
        }
        let recent = complete.then(|| Recent {
            prefix,
            rows: rows
                .iter()
                .filter(|r| closed(r))
                .map(|r| {
                    (
                        r.get("correlation_id").to_string(),
                        r.get("close_code").to_string(),
                    )
                })
                .collect(),
            total: reply.total_count().map(|t| t.saturating_sub(not_closed)),
        });
        // Duplicates are dropped by `record_outcome`, which a gate's lookup never reaches.
        Ok(Found {
            raw: found,
            recent,
            duplicates: Vec::new(),
        })
    }

    /// Remembers the template's sys_id when a recent standard change was made from an active
    /// template of the configured name (dot-walked fields; an instance that does not answer
    /// them costs the template lookup only).
    fn learn_template(&self, rows: &[Raw], name: &str) {
        let learned = rows.iter().find_map(|r| {
            let id = r.get(TEMPLATE_ID_FIELD);
            (r.kind() == "standard"
                && is_sys_id(id)
                && r.get(TEMPLATE_NAME_FIELD).eq_ignore_ascii_case(name)
                && r.get(TEMPLATE_ACTIVE_FIELD) == "true")
                .then(|| id.to_ascii_lowercase())
        });
        if let Some(id) = learned {
            tracing::debug!("standard change template {name:?} is {id} (from a recent change)");
            let mut cache = self.cache();
            cache.template = Some(id);
            cache.template_learned = true;
        }
    }
}

#[async_trait]
impl TrackRecord for ServiceNow {
    async fn history(&self, q_: &HistoryQuery<'_>) -> Result<History> {
        let prefix = key_prefix(q_.service_id, q_.environment);
        let exclude = q_.exclude_key.map(str::to_string);
        let exclude_fitted = q_.exclude_key.map(|k| {
            // The key as stored: the same fitting the writer applies.
            if k.len() <= KEY_MAX {
                k.to_string()
            } else {
                let sha = k
                    .parse::<CorrelationKey>()
                    .map(|k| k.sha)
                    .unwrap_or_default();
                CorrelationKey::new(q_.service_id, q_.environment, &sha).fitted(KEY_MAX)
            }
        });
        // The rows read with the gate's lookup, if they are this service's and environment's.
        let carried = q_
            .found
            .and_then(|found| found.carried::<Found>())
            .and_then(|f| f.recent.clone())
            .filter(|r| r.prefix == prefix);
        let recent = match carried {
            Some(recent) => recent,
            None => self.recent(&prefix).await?,
        };
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

    /// The commit of the last change closed successful for the service and environment of
    /// `key` (the last deploy other than `key`'s, a failed one aside: it may not have
    /// shipped), from the query that also finds `key`'s record: both are handed on in the
    /// lookup, for the gate's `open` and `history`.
    async fn last_change_sha(&self, key: &CorrelationKey) -> Result<Since> {
        let prefix = key_prefix(&key.service_id, &key.environment);
        let mut found = self.survey(key).await?;
        let recent = match found.recent.clone() {
            Some(recent) => recent,
            None => {
                let recent = self.recent(&prefix).await?;
                found.recent = Some(recent.clone());
                recent
            }
        };
        let fitted = key.fitted(KEY_MAX);
        let sha = recent
            .rows
            .iter()
            .find(|(k, code)| *k != fitted && *code == self.cfg.close_code_success)
            .and_then(|(k, _)| k.parse::<CorrelationKey>().ok())
            .map(|k| k.sha);
        let record = found.raw.as_ref().map(|r| self.to_record(r));
        Ok(Since {
            sha,
            found: Some(Lookup::of(key, record).carrying(found)),
        })
    }
}
