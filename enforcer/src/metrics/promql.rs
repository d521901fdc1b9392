//! Checks that every PromQL expression shipped in `dashboards/` (Grafana dashboards,
//! Prometheus recording and alerting rules) names only metrics the agent exports, or
//! series the rules themselves record. A renamed metric then fails here instead of
//! leaving an empty panel or an alert that can never fire.
//!
//! The extractor is a small PromQL lexer: it skips strings, label matchers (`{…}`),
//! ranges (`[…]`), numbers and durations, Grafana variables (`$x`, `${x}`), function
//! and aggregation names (an identifier followed by `(`) and the label lists of
//! `by`/`without`/`on`/`ignoring`/`group_left`/`group_right`; what remains are metric
//! names.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "start",
    "end",
];
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Series Prometheus itself makes, which rules may use.
const PROMETHEUS_SERIES: &[&str] = &["up", "ALERTS", "ALERTS_FOR_STATE"];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Index just past the bracket that closes the one at `open`, skipping strings.
fn skip_balanced(s: &[char], open: usize, l: char, r: char) -> usize {
    let mut depth = 0usize;
    let mut i = open;
    while i < s.len() {
        match s[i] {
            '"' | '\'' | '`' => i = skip_string(s, i),
            c if c == l => {
                depth += 1;
                i += 1;
            }
            c if c == r => {
                depth -= 1;
                i += 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    i
}

/// Index just past the string literal starting at `start`.
fn skip_string(s: &[char], start: usize) -> usize {
    let quote = s[start];
    let mut i = start + 1;
    while i < s.len() {
        match s[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// Metric names an expression refers to.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let s: Vec<char> = expr.chars().collect();
    let mut out = BTreeSet::new();
    let mut i = 0;
    let next_non_space = |mut j: usize| {
        while j < s.len() && s[j].is_whitespace() {
            j += 1;
        }
        j
    };
    while i < s.len() {
        let c = s[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&s, i);
        } else if c == '{' {
            i = skip_balanced(&s, i, '{', '}');
        } else if c == '[' {
            i = skip_balanced(&s, i, '[', ']');
        } else if c == '#' {
            while i < s.len() && s[i] != '\n' {
                i += 1;
            }
        } else if c == '$' {
            i += 1;
            if i < s.len() && s[i] == '{' {
                i = skip_balanced(&s, i, '{', '}');
            } else {
                while i < s.len() && is_ident(s[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() || (c == '.' && s.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // Numbers, hex, exponents and durations (`5m`, `1h30m`).
            while i < s.len() && (is_ident(s[i]) || s[i] == '.') {
                i += 1;
            }
        } else if is_ident_start(c) {
            let start = i;
            while i < s.len() && is_ident(s[i]) {
                i += 1;
            }
            let word: String = s[start..i].iter().collect();
            let after = next_non_space(i);
            // `sum by (l) (…)`: an aggregation whose grouping comes first.
            let grouped = ["by", "without"].iter().any(|g| {
                let w: Vec<char> = g.chars().collect();
                s.get(after..after + w.len()) == Some(&w[..])
                    && s.get(after + w.len()).is_none_or(|c| !is_ident(*c))
            });
            let call = s.get(after) == Some(&'(') || grouped;
            if GROUPING.contains(&word.as_str()) && call {
                i = skip_balanced(&s, after, '(', ')');
            } else if word == "offset" || word == "@" {
                // The duration or timestamp after it is skipped as a number.
            } else if !call && !KEYWORDS.contains(&word.as_str()) {
                out.insert(word);
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Metric names of a Grafana template-variable query: `label_values(metric, label)`,
/// `label_values(label)`, `query_result(expr)`, `metrics(regex)`, or plain PromQL.
pub fn grafana_query_metric_names(query: &str) -> BTreeSet<String> {
    let q = query.trim();
    if let Some(args) = q
        .strip_prefix("label_values(")
        .and_then(|a| a.strip_suffix(')'))
    {
        // The label is the last argument; with one argument there is no metric.
        return match args.rsplit_once(',') {
            Some((metric, _label)) => metric_names(metric),
            None => BTreeSet::new(),
        };
    }
    if let Some(expr) = q
        .strip_prefix("query_result(")
        .and_then(|a| a.strip_suffix(')'))
    {
        return metric_names(expr);
    }
    if q.starts_with("metrics(") || q.starts_with("label_names(") {
        return BTreeSet::new();
    }
    metric_names(q)
}

/// Where a PromQL expression was found, for messages.
#[derive(Debug)]
pub struct Found {
    pub file: PathBuf,
    pub place: String,
    pub names: BTreeSet<String>,
}

/// Every PromQL expression in a dashboard: panel targets (also in rows), annotations
/// (any `expr`), and the queries of `query` template variables.
fn dashboard_queries(file: &Path, json: &serde_json::Value) -> Vec<Found> {
    fn walk(v: &serde_json::Value, path: &str, file: &Path, out: &mut Vec<Found>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let here = format!("{path}.{k}");
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(e)) => out.push(Found {
                            file: file.into(),
                            place: here,
                            names: metric_names(e),
                        }),
                        ("templating", _) => {}
                        _ => walk(v, &here, file, out),
                    }
                }
            }
            serde_json::Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(v, &format!("{path}[{i}]"), file, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(json, "", file, &mut out);
    let vars = json["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (i, v) in vars.iter().enumerate() {
        if v["type"].as_str() != Some("query") {
            continue;
        }
        // Older Grafana stores the query as a string, newer as `{query: ...}`.
        let q = v["query"]
            .as_str()
            .or_else(|| v["query"]["query"].as_str())
            .unwrap_or_default();
        out.push(Found {
            file: file.into(),
            place: format!(
                ".templating.list[{i}] ({})",
                v["name"].as_str().unwrap_or("?")
            ),
            names: grafana_query_metric_names(q),
        });
    }
    out
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(e: &str) -> Vec<String> {
        metric_names(e).into_iter().collect()
    }

    #[test]
    fn lexer_finds_only_metric_names() {
        assert_eq!(
            names(
                r#"sum by (workload, direction) (rate(enforcer_workload_bytes_total{workload=~"$workload", reason!="x{y}"}[$__rate_interval]))"#
            ),
            ["enforcer_workload_bytes_total"]
        );
        assert_eq!(
            names(
                "histogram_quantile(0.99, sum without (instance) (rate(a_bucket[5m] offset 1h))) > 1e3 and on (job) group_left(version) b:rec:rate5m"
            ),
            ["a_bucket", "b:rec:rate5m"]
        );
        assert_eq!(
            names("x unless y <= 4 * avg_over_time(z[1h:1m])"),
            ["x", "y", "z"]
        );
        assert_eq!(
            names(r#"label_replace(up{job="enforcer"} == 0, "dst", "$1", "src", "(.*)") # c"#),
            ["up"]
        );
        assert_eq!(names("sum(x) by (le) / ignoring(le) y"), ["x", "y"]);
        assert_eq!(
            grafana_query_metric_names(
                "label_values(enforcer_workload_info{instance=~\"$instance\"}, workload)"
            )
            .into_iter()
            .collect::<Vec<_>>(),
            ["enforcer_workload_info"]
        );
        assert!(grafana_query_metric_names("label_values(instance)").is_empty());
    }

    fn yaml(path: &Path) -> serde_yaml_ng::Value {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// (record names, alert names, every expression) of a rules file.
    fn rules(path: &Path) -> (BTreeSet<String>, Vec<String>, Vec<Found>) {
        let doc = yaml(path);
        let mut records = BTreeSet::new();
        let mut alerts = Vec::new();
        let mut found = Vec::new();
        let groups = doc["groups"].as_sequence().cloned().unwrap_or_default();
        assert!(!groups.is_empty(), "{}: no groups", path.display());
        for g in groups {
            for r in g["rules"].as_sequence().cloned().unwrap_or_default() {
                let expr = r["expr"].as_str().unwrap_or_default().to_owned();
                let name = if let Some(rec) = r["record"].as_str() {
                    records.insert(rec.to_owned());
                    rec.to_owned()
                } else {
                    let a = r["alert"].as_str().unwrap_or("?").to_owned();
                    alerts.push(a.clone());
                    a
                };
                found.push(Found {
                    file: path.into(),
                    place: name,
                    names: metric_names(&expr),
                });
            }
        }
        (records, alerts, found)
    }

    #[test]
    fn dashboards_and_rules_use_only_exported_metrics() {
        let rules_file = repo().join("dashboards/rules/enforcer.rules.yaml");
        let (records, alerts, mut found) = rules(&rules_file);
        assert!(!alerts.is_empty() && !records.is_empty());
        let dashboards = files(&repo().join("dashboards"), "json");
        assert!(dashboards.len() >= 3, "dashboards: {dashboards:?}");
        for d in &dashboards {
            let text = std::fs::read_to_string(d).expect("read dashboard");
            let json: serde_json::Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
            let queries = dashboard_queries(d, &json);
            assert!(!queries.is_empty(), "{}: no queries", d.display());
            found.extend(queries);
        }
        let known: BTreeSet<String> = super::super::metric_names()
            .into_iter()
            .chain(records.iter().cloned())
            .chain(PROMETHEUS_SERIES.iter().map(|s| (*s).to_owned()))
            .collect();
        let mut problems = Vec::new();
        for f in &found {
            if f.names.is_empty() {
                problems.push(format!(
                    "{}: {}: names no metric",
                    f.file.display(),
                    f.place
                ));
            }
            for n in f.names.difference(&known) {
                problems.push(format!(
                    "{}: {}: `{n}` is not a metric the agent exports nor a recorded series",
                    f.file.display(),
                    f.place
                ));
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    /// `deploy/kubernetes/prometheusrule.yaml` carries the same groups as the plain
    /// rules file (`scripts/gen-prometheusrule.sh` writes it).
    #[test]
    fn prometheusrule_manifest_matches_the_rules_file() {
        let plain = yaml(&repo().join("dashboards/rules/enforcer.rules.yaml"));
        let manifest = yaml(&repo().join("deploy/kubernetes/prometheusrule.yaml"));
        assert_eq!(manifest["kind"].as_str(), Some("PrometheusRule"));
        assert_eq!(
            manifest["spec"]["groups"], plain["groups"],
            "run scripts/gen-prometheusrule.sh"
        );
    }

    /// Every alert has a unit test, firing and not firing, in dashboards/rules/tests.
    #[test]
    fn every_alert_has_promtool_tests() {
        let (_, alerts, _) = rules(&repo().join("dashboards/rules/enforcer.rules.yaml"));
        let mut tested = BTreeSet::new();
        let mut quiet = BTreeSet::new();
        for f in files(&repo().join("dashboards/rules/tests"), "yaml") {
            let doc = yaml(&f);
            for t in doc["tests"].as_sequence().cloned().unwrap_or_default() {
                for c in t["alert_rule_test"]
                    .as_sequence()
                    .cloned()
                    .unwrap_or_default()
                {
                    let name = c["alertname"].as_str().unwrap_or_default().to_owned();
                    let firing = c["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty());
                    if firing {
                        tested.insert(name);
                    } else {
                        quiet.insert(name);
                    }
                }
            }
        }
        for a in &alerts {
            assert!(tested.contains(a), "alert {a} has no firing test");
            assert!(quiet.contains(a), "alert {a} has no not-firing test");
        }
    }
}
