//! Line numbers of rules, for attribution ("rule 7 is policies[2].ingress[0], line 31").
//!
//! serde gives positions only with errors, so each rule is located by one extra pass
//! over the text that walks to the rule and fails there on purpose; the failure
//! carries the rule's line. That is exact but costs one YAML parse per rule, so past a
//! budget (about a hundred rules in a 20 KB file) rule lines are left out: the line is
//! optional everywhere it is used.
use std::fmt;

use serde::{
    Deserializer,
    de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor},
};

use super::{Direction, PolicyFile};

/// Above this many bytes parsed in total (rules × file size), rule lines are skipped.
/// YAML parses at roughly 20 MB/s, so this bounds the extra time near 100 ms.
const BUDGET_BYTES: usize = 2 << 20;

pub(super) fn fill_rule_lines(text: &str, file: &mut PolicyFile) {
    let rules: usize = file
        .policies
        .iter()
        .flat_map(|p| Direction::BOTH.into_iter().filter_map(|d| p.rules(d)))
        .map(<[_]>::len)
        .sum();
    if rules.saturating_mul(text.len()) > BUDGET_BYTES {
        return;
    }
    for (pi, policy) in file.policies.iter_mut().enumerate() {
        for dir in Direction::BOTH {
            let rules = match dir {
                Direction::Ingress => policy.ingress.as_mut(),
                Direction::Egress => policy.egress.as_mut(),
            };
            for (ri, rule) in rules.into_iter().flatten().enumerate() {
                let path = [
                    Step::Key("policies"),
                    Step::Index(pi),
                    Step::Key(dir.as_str()),
                    Step::Index(ri),
                ];
                rule.line = line_of(text, &path);
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// The line of the node at `path`, found by failing there.
fn line_of(text: &str, path: &[Step<'_>]) -> Option<usize> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    match (Probe { path }).deserialize(de) {
        Ok(()) => None,
        Err(e) if e.to_string().contains(Found::MESSAGE) => e.location().map(|l| l.line()),
        Err(_) => None,
    }
}

struct Probe<'p, 'a> {
    path: &'p [Step<'a>],
}

impl<'de> DeserializeSeed<'de> for Probe<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.path.first() {
            None => d.deserialize_any(Found),
            Some(Step::Key(_)) => d.deserialize_map(self),
            Some(Step::Index(_)) => d.deserialize_seq(self),
        }
    }
}

impl<'de> Visitor<'de> for Probe<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("anything")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Step::Key(want), rest)) = self.path.split_first() else {
            return Ok(());
        };
        while let Some(key) = map.next_key::<serde_yaml_ng::Value>()? {
            if key.as_str() == Some(*want) {
                return map.next_value_seed(Probe { path: rest });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Step::Index(want), rest)) = self.path.split_first() else {
            return Ok(());
        };
        for _ in 0..*want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Probe { path: rest }).map(|_| ())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Fails on whatever it is given, inside serde_yaml_ng's handling of that node, so
/// the error gets the node's position.
struct Found;

impl Found {
    const MESSAGE: &'static str = "\u{0}enforcer-rule-located\u{0}";
}

impl<'de> Visitor<'de> for Found {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::MESSAGE)
    }
}
