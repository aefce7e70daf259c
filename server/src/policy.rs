//! Promotion policies as code: Rego evaluated in-process with regorus.
//!
//! A bundle is every `.rego` file of a directory except tests (`*_test.rego`); its digest is the
//! SHA-256 over the sorted `(file name, content)` pairs, stored with every decision so an auditor
//! knows which rules decided. Evaluation errors never allow anything: they deny, with the error.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The default bundle, built into the binary from `policies/`.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "promotion.rego",
        include_str!("../../policies/promotion.rego"),
    ),
    (
        "promotion_test.rego",
        include_str!("../../policies/promotion_test.rego"),
    ),
];

const PACKAGE: &str = "data.custody.promotion";

#[derive(Clone)]
pub struct PolicyBundle {
    engine: regorus::Engine,
    digest: String,
    pub source: String,
}

/// What the policies answered for one input.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Decision {
    pub deny: Vec<String>,
    pub required_approvals: i32,
    pub approver_group: Option<String>,
    #[serde(skip)]
    pub expires_in: Option<Duration>,
    pub expires_in_text: Option<String>,
    pub policy_digest: String,
    /// Set when evaluation failed; the decision then denies (fail closed).
    pub error: Option<String>,
}

impl Decision {
    pub fn to_json(&self) -> Value {
        json!({
            "deny": self.deny,
            "required_approvals": self.required_approvals,
            "approver_group": self.approver_group,
            "expires_in": self.expires_in_text,
            "policy_digest": self.policy_digest,
            "error": self.error,
        })
    }
}

fn is_test_file(name: &str) -> bool {
    name.ends_with("_test.rego")
}

impl PolicyBundle {
    /// The bundle built into the binary.
    pub fn embedded() -> anyhow::Result<Self> {
        let files = EMBEDDED
            .iter()
            .map(|(n, c)| (n.to_string(), c.to_string()))
            .collect();
        Self::from_files(files, "built-in policies/".into())
    }

    /// Every `.rego` file of `dir` (tests excluded).
    pub fn from_dir(dir: &Path) -> anyhow::Result<Self> {
        Self::from_files(read_dir(dir)?, dir.display().to_string())
    }

    fn from_files(files: Vec<(String, String)>, source: String) -> anyhow::Result<Self> {
        let mut files: Vec<(String, String)> = files
            .into_iter()
            .filter(|(n, _)| !is_test_file(n))
            .collect();
        files.sort();
        anyhow::ensure!(
            !files.is_empty(),
            "the policy bundle {source} holds no .rego file"
        );
        let mut hasher = Sha256::new();
        let mut engine = regorus::Engine::new();
        for (name, content) in &files {
            hasher.update(name.as_bytes());
            hasher.update([0]);
            hasher.update(content.as_bytes());
            hasher.update([0]);
            engine
                .add_policy(name.clone(), content.clone())
                .map_err(|e| anyhow::anyhow!("policy {name} of {source} does not load: {e}"))?;
        }
        anyhow::ensure!(
            engine
                .get_packages()
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .iter()
                .any(|p| p == PACKAGE),
            "the policy bundle {source} has no package custody.promotion"
        );
        Ok(PolicyBundle {
            engine,
            digest: hex::encode(hasher.finalize()),
            source,
        })
    }

    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Evaluates the bundle for one input document.
    pub fn evaluate(&self, input: &Value) -> Decision {
        match self.try_evaluate(input) {
            Ok(decision) => decision,
            Err(e) => Decision {
                deny: vec![format!("the promotion policy failed to evaluate: {e:#}")],
                required_approvals: 0,
                approver_group: None,
                expires_in: None,
                expires_in_text: None,
                policy_digest: self.digest.clone(),
                error: Some(format!("{e:#}")),
            },
        }
    }

    fn try_evaluate(&self, input: &Value) -> anyhow::Result<Decision> {
        let mut engine = self.engine.clone();
        engine.set_input(
            regorus::Value::from_json_str(&input.to_string())
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        );
        let mut deny: Vec<String> = match query(&mut engine, "deny")? {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    other => anyhow::bail!("deny holds {other}, not a string"),
                })
                .collect::<anyhow::Result<_>>()?,
            Some(other) => anyhow::bail!("deny must be a set of strings, not {other}"),
        };
        deny.sort();
        let required_approvals = match query(&mut engine, "required_approvals")? {
            None => 0,
            Some(Value::Number(n)) => {
                n.as_i64()
                    .filter(|n| (0..=100).contains(n))
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "required_approvals must be a whole number 0..=100, not {n}"
                        )
                    })? as i32
            }
            Some(other) => anyhow::bail!("required_approvals must be a number, not {other}"),
        };
        let approver_group = match query(&mut engine, "approver_group")? {
            None => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => anyhow::bail!("approver_group must be a string, not {other}"),
        };
        let (expires_in, expires_in_text) = match query(&mut engine, "expires_in")? {
            None => (None, None),
            Some(Value::String(s)) => {
                let d =
                    crate::auth::parse_ttl(&s).map_err(|e| anyhow::anyhow!("expires_in: {e}"))?;
                (Some(d.to_std()?), Some(s))
            }
            Some(Value::Number(n)) => {
                let secs = n
                    .as_u64()
                    .ok_or_else(|| anyhow::anyhow!("expires_in must be positive seconds"))?;
                (Some(Duration::from_secs(secs)), Some(format!("{secs}s")))
            }
            Some(other) => anyhow::bail!("expires_in must be a duration like \"72h\", not {other}"),
        };
        Ok(Decision {
            deny,
            required_approvals,
            approver_group,
            expires_in,
            expires_in_text,
            policy_digest: self.digest.clone(),
            error: None,
        })
    }
}

/// The value of one rule of the package, or `None` when it is undefined for this input.
fn query(engine: &mut regorus::Engine, rule: &str) -> anyhow::Result<Option<Value>> {
    let results = engine
        .eval_query(format!("{PACKAGE}.{rule}"), false)
        .map_err(|e| anyhow::anyhow!("{rule}: {e}"))?;
    let Some(value) = results
        .result
        .into_iter()
        .next()
        .and_then(|r| r.expressions.into_iter().next())
    else {
        return Ok(None);
    };
    if value.value == regorus::Value::Undefined {
        return Ok(None);
    }
    Ok(Some(serde_json::to_value(&value.value)?))
}

fn read_dir(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("reading the policy directory {}", dir.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rego") {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            let content = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            files.push((name, content));
        }
    }
    Ok(files)
}

/// The outcome of `custody-server policy test`.
pub struct TestReport {
    pub passed: Vec<String>,
    pub failed: Vec<(String, String)>,
}

/// Runs every `test_*` rule of the bundle's test files: a test passes when it evaluates to true.
pub fn run_tests(dir: Option<&Path>) -> anyhow::Result<TestReport> {
    let files = match dir {
        Some(dir) => read_dir(dir)?,
        None => EMBEDDED
            .iter()
            .map(|(n, c)| (n.to_string(), c.to_string()))
            .collect(),
    };
    let mut engine = regorus::Engine::new();
    for (name, content) in &files {
        engine
            .add_policy(name.clone(), content.clone())
            .map_err(|e| anyhow::anyhow!("policy {name} does not load: {e}"))?;
    }
    let mut report = TestReport {
        passed: Vec::new(),
        failed: Vec::new(),
    };
    for (name, content) in files.iter().filter(|(n, _)| is_test_file(n)) {
        let package = content
            .lines()
            .find_map(|l| l.trim().strip_prefix("package "))
            .map(|p| p.trim().to_owned())
            .ok_or_else(|| anyhow::anyhow!("{name} declares no package"))?;
        let mut tests: Vec<&str> = content
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("test_")?;
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                Some(&l[..end + 5])
            })
            .collect();
        tests.dedup();
        for test in tests {
            let id = format!("data.{package}.{test}");
            match engine.eval_query(id.clone(), false) {
                Ok(results) => {
                    let value = results
                        .result
                        .into_iter()
                        .next()
                        .and_then(|r| r.expressions.into_iter().next());
                    match value.map(|e| e.value) {
                        Some(regorus::Value::Bool(true)) => report.passed.push(id),
                        Some(v) => report.failed.push((id, format!("evaluated to {v}"))),
                        None => report
                            .failed
                            .push((id, "undefined (a condition did not hold)".into())),
                    }
                }
                Err(e) => report.failed.push((id, e.to_string())),
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_bundle_lists_every_file_of_policies_dir() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let mut on_disk: Vec<String> = read_dir(&dir)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = EMBEDDED.iter().map(|(n, _)| n.to_string()).collect();
        embedded.sort();
        assert_eq!(
            on_disk, embedded,
            "add new policy files to policy::EMBEDDED"
        );
        assert_eq!(
            PolicyBundle::embedded().unwrap().digest(),
            PolicyBundle::from_dir(&dir).unwrap().digest()
        );
    }

    #[test]
    fn default_policy_tests_pass() {
        let report = run_tests(None).unwrap();
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        assert!(report.passed.len() >= 8, "{:?}", report.passed);
    }

    #[test]
    fn a_broken_rule_fails_closed() {
        let files = vec![(
            "p.rego".to_string(),
            "package custody.promotion\nimport rego.v1\nrequired_approvals := \"two\"\n"
                .to_string(),
        )];
        let bundle = PolicyBundle::from_files(files, "test".into()).unwrap();
        let decision = bundle.evaluate(&json!({}));
        assert!(decision.error.is_some());
        assert_eq!(decision.deny.len(), 1);
    }

    #[test]
    fn a_bundle_that_does_not_parse_is_refused() {
        let files = vec![(
            "p.rego".to_string(),
            "package custody.promotion\ndeny contains x if {".to_string(),
        )];
        assert!(PolicyBundle::from_files(files, "test".into()).is_err());
    }
}
