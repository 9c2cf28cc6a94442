//! Every environment variable changegate reads, in one place.

pub const CONFIG: &str = "CHANGEGATE_CONFIG";
pub const BACKEND: &str = "CHANGEGATE_BACKEND";
pub const ENVIRONMENT: &str = "CHANGEGATE_ENVIRONMENT";
pub const SERVICE: &str = "CHANGEGATE_SERVICE";
pub const MODE: &str = "CHANGEGATE_MODE";
pub const LEDGER: &str = "CHANGEGATE_LEDGER";
pub const DOTENV: &str = "CHANGEGATE_DOTENV";
pub const NOW: &str = "CHANGEGATE_NOW";
pub const LOG: &str = "CHANGEGATE_LOG";
pub const RUST_LOG: &str = "RUST_LOG";
pub const NO_COLOR: &str = "NO_COLOR";
pub const TESTS_PASSED: &str = "CHANGEGATE_TESTS_PASSED";
pub const REVIEWED: &str = "CHANGEGATE_REVIEWED";

pub const SERVICENOW_URL: &str = "CHANGEGATE_SERVICENOW_URL";
pub const SERVICENOW_USER: &str = "CHANGEGATE_SERVICENOW_USER";
pub const SERVICENOW_PASSWORD: &str = "CHANGEGATE_SERVICENOW_PASSWORD";
pub const SERVICENOW_CLIENT_ID: &str = "CHANGEGATE_SERVICENOW_CLIENT_ID";
pub const SERVICENOW_CLIENT_SECRET: &str = "CHANGEGATE_SERVICENOW_CLIENT_SECRET";
pub const SERVICENOW_TOKEN: &str = "CHANGEGATE_SERVICENOW_TOKEN";

pub const JIRA_URL: &str = "CHANGEGATE_JIRA_URL";
pub const JIRA_USER: &str = "CHANGEGATE_JIRA_USER";
pub const JIRA_TOKEN: &str = "CHANGEGATE_JIRA_TOKEN";
pub const JIRA_PROJECT: &str = "CHANGEGATE_JIRA_PROJECT";

pub const GITHUB_TOKEN: &str = "GITHUB_TOKEN";
pub const CHANGEGATE_GITHUB_TOKEN: &str = "CHANGEGATE_GITHUB_TOKEN";
pub const GITHUB_APP_ID: &str = "CHANGEGATE_GITHUB_APP_ID";
pub const GITHUB_APP_PRIVATE_KEY: &str = "CHANGEGATE_GITHUB_APP_PRIVATE_KEY";
pub const GITLAB_TOKEN: &str = "CHANGEGATE_GITLAB_TOKEN";

// GitHub Actions.
pub const GITHUB_ACTIONS: &str = "GITHUB_ACTIONS";
pub const GITHUB_API_URL: &str = "GITHUB_API_URL";
pub const GITHUB_SERVER_URL: &str = "GITHUB_SERVER_URL";
pub const GITHUB_REPOSITORY: &str = "GITHUB_REPOSITORY";
pub const GITHUB_SHA: &str = "GITHUB_SHA";
pub const GITHUB_REF: &str = "GITHUB_REF";
pub const GITHUB_REF_NAME: &str = "GITHUB_REF_NAME";
pub const GITHUB_HEAD_REF: &str = "GITHUB_HEAD_REF";
pub const GITHUB_BASE_REF: &str = "GITHUB_BASE_REF";
pub const GITHUB_EVENT_NAME: &str = "GITHUB_EVENT_NAME";
pub const GITHUB_EVENT_PATH: &str = "GITHUB_EVENT_PATH";
pub const GITHUB_RUN_ID: &str = "GITHUB_RUN_ID";
pub const GITHUB_RUN_ATTEMPT: &str = "GITHUB_RUN_ATTEMPT";
pub const GITHUB_ACTOR: &str = "GITHUB_ACTOR";
pub const GITHUB_OUTPUT: &str = "GITHUB_OUTPUT";
pub const GITHUB_STEP_SUMMARY: &str = "GITHUB_STEP_SUMMARY";
pub const GITHUB_WORKSPACE: &str = "GITHUB_WORKSPACE";

// GitHub container action inputs, exactly as the runner names them: `INPUT_` and the
// input name upper-cased, hyphens kept (so they cannot be shell variables, only env entries).
pub const INPUT_COMMAND: &str = "INPUT_COMMAND";
pub const INPUT_ENVIRONMENT: &str = "INPUT_ENVIRONMENT";
pub const INPUT_SERVICE: &str = "INPUT_SERVICE";
pub const INPUT_BACKEND: &str = "INPUT_BACKEND";
pub const INPUT_CONFIG: &str = "INPUT_CONFIG";
pub const INPUT_OUTCOME: &str = "INPUT_OUTCOME";
pub const INPUT_WAIT: &str = "INPUT_WAIT";
pub const INPUT_MODE: &str = "INPUT_MODE";
pub const INPUT_DRY_RUN: &str = "INPUT_DRY-RUN";
pub const INPUT_EMERGENCY: &str = "INPUT_EMERGENCY";
pub const INPUT_GITHUB_TOKEN: &str = "INPUT_GITHUB-TOKEN";
pub const INPUT_SERVICENOW_URL: &str = "INPUT_SERVICENOW-URL";
pub const INPUT_JIRA_URL: &str = "INPUT_JIRA-URL";
pub const INPUT_JIRA_PROJECT: &str = "INPUT_JIRA-PROJECT";

// GitLab CI.
pub const GITLAB_CI: &str = "GITLAB_CI";
pub const CI_API_V4_URL: &str = "CI_API_V4_URL";
pub const CI_PROJECT_PATH: &str = "CI_PROJECT_PATH";
pub const CI_PROJECT_ID: &str = "CI_PROJECT_ID";
pub const CI_PROJECT_URL: &str = "CI_PROJECT_URL";
pub const CI_PROJECT_NAME: &str = "CI_PROJECT_NAME";
pub const CI_COMMIT_SHA: &str = "CI_COMMIT_SHA";
pub const CI_COMMIT_BEFORE_SHA: &str = "CI_COMMIT_BEFORE_SHA";
pub const CI_COMMIT_REF_NAME: &str = "CI_COMMIT_REF_NAME";
pub const CI_COMMIT_BRANCH: &str = "CI_COMMIT_BRANCH";
pub const CI_COMMIT_TAG: &str = "CI_COMMIT_TAG";
pub const CI_PROJECT_DIR: &str = "CI_PROJECT_DIR";
pub const CI_COMMIT_TITLE: &str = "CI_COMMIT_TITLE";
pub const CI_COMMIT_MESSAGE: &str = "CI_COMMIT_MESSAGE";
pub const CI_COMMIT_TIMESTAMP: &str = "CI_COMMIT_TIMESTAMP";
pub const CI_COMMIT_AUTHOR: &str = "CI_COMMIT_AUTHOR";
pub const CI_MERGE_REQUEST_IID: &str = "CI_MERGE_REQUEST_IID";
pub const CI_MERGE_REQUEST_TITLE: &str = "CI_MERGE_REQUEST_TITLE";
pub const CI_MERGE_REQUEST_LABELS: &str = "CI_MERGE_REQUEST_LABELS";
pub const CI_MERGE_REQUEST_SOURCE_BRANCH_NAME: &str = "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME";
pub const CI_MERGE_REQUEST_TARGET_BRANCH_NAME: &str = "CI_MERGE_REQUEST_TARGET_BRANCH_NAME";
pub const CI_MERGE_REQUEST_SOURCE_BRANCH_SHA: &str = "CI_MERGE_REQUEST_SOURCE_BRANCH_SHA";
pub const CI_MERGE_REQUEST_DIFF_BASE_SHA: &str = "CI_MERGE_REQUEST_DIFF_BASE_SHA";
pub const CI_MERGE_REQUEST_PROJECT_URL: &str = "CI_MERGE_REQUEST_PROJECT_URL";
pub const CI_PIPELINE_URL: &str = "CI_PIPELINE_URL";
pub const CI_JOB_URL: &str = "CI_JOB_URL";
pub const CI_ENVIRONMENT_NAME: &str = "CI_ENVIRONMENT_NAME";
pub const CI_DEFAULT_BRANCH: &str = "CI_DEFAULT_BRANCH";
pub const GITLAB_USER_LOGIN: &str = "GITLAB_USER_LOGIN";
pub const CI_JOB_STATUS: &str = "CI_JOB_STATUS";
pub const CI_JOB_TOKEN: &str = "CI_JOB_TOKEN";

/// Reads a variable, treating an empty value as unset (runners set empty inputs).
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}
