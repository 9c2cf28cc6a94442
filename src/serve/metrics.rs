//! `/metrics`: what the server did, in Prometheus text (prometheus-client).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    forge: &'static str,
    event: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallbackLabels {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApprovalLabels {
    forge: &'static str,
    status: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: &'static str,
}

/// The server's metrics; one per server, shared by its handlers.
pub(super) struct Metrics {
    registry: Registry,
    webhooks: Family<WebhookLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    callbacks: Family<CallbackLabels, Counter>,
    approval_wait: Histogram,
    approvals: Family<ApprovalLabels, Counter>,
    backend_errors: Family<ServiceLabels, Counter>,
}

impl Metrics {
    pub(super) fn new() -> Metrics {
        let mut registry = Registry::default();
        let webhooks = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "changegate_webhooks",
            "Webhook deliveries, by forge, event and what became of them",
            webhooks.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "changegate_decisions",
            "Deployments decided, by final decision (error: no decision could be made)",
            decisions.clone(),
        );
        let callbacks = Family::<CallbackLabels, Counter>::default();
        registry.register(
            "changegate_callbacks",
            "Answers sent to the forge (status reports, approvals, rejections), by result",
            callbacks.clone(),
        );
        // From a few seconds to the longest approval waits (hours).
        let approval_wait = Histogram::new([
            1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0,
        ]);
        registry.register(
            "changegate_approval_wait_seconds",
            "How long a deployment that needed approval waited for its answer",
            approval_wait.clone(),
        );
        let approvals = Family::<ApprovalLabels, Counter>::default();
        registry.register(
            "changegate_approvals",
            "Deployment approvals answered on the forge (GitLab), by status and result",
            approvals.clone(),
        );
        let backend_errors = Family::<ServiceLabels, Counter>::default();
        registry.register(
            "changegate_backend_errors",
            "Calls to what the server depends on that failed, by service (the backend, gitlab)",
            backend_errors.clone(),
        );
        Metrics {
            registry,
            approvals,
            backend_errors,
            webhooks,
            decisions,
            callbacks,
            approval_wait,
        }
    }

    pub(super) fn webhook(&self, forge: &'static str, event: &'static str, result: &'static str) {
        self.webhooks
            .get_or_create(&WebhookLabels {
                forge,
                event,
                result,
            })
            .inc();
    }

    pub(super) fn decision(&self, decision: &'static str) {
        self.decisions
            .get_or_create(&DecisionLabels { decision })
            .inc();
    }

    pub(super) fn callback(&self, kind: &'static str, result: &'static str) {
        self.callbacks
            .get_or_create(&CallbackLabels { kind, result })
            .inc();
    }

    pub(super) fn approval(&self, forge: &'static str, status: &'static str, result: &'static str) {
        self.approvals
            .get_or_create(&ApprovalLabels {
                forge,
                status,
                result,
            })
            .inc();
    }

    pub(super) fn backend_error(&self, service: &'static str) {
        self.backend_errors
            .get_or_create(&ServiceLabels { service })
            .inc();
    }

    pub(super) fn approval_waited(&self, seconds: f64) {
        self.approval_wait.observe(seconds);
    }

    /// The text exposition format.
    pub(super) fn text(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
