//! Which containers are collected: include/exclude rules on labels (`key` or `key=value`)
//! and on names (regexes, matched against the name without Docker's leading `/`).
//!
//! Exclusion wins. With no include rule at all everything is included; otherwise a
//! container must match at least one include rule (label or name).

use std::collections::BTreeMap;

use regex::Regex;

use crate::config::Config;
use crate::error::{Error, ErrorKind};

#[derive(Debug, Clone)]
enum LabelRule {
    Has(String),
    Equals(String, String),
}

impl LabelRule {
    fn parse(s: &str) -> Result<LabelRule, Error> {
        match s.split_once('=') {
            _ if s.is_empty() => Err(Error::new(ErrorKind::Config, "empty label rule")),
            Some(("", _)) => Err(Error::new(
                ErrorKind::Config,
                format!("label rule {s:?} has an empty key"),
            )),
            Some((k, v)) => Ok(LabelRule::Equals(k.to_string(), v.to_string())),
            None => Ok(LabelRule::Has(s.to_string())),
        }
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            LabelRule::Has(k) => labels.contains_key(k),
            LabelRule::Equals(k, v) => labels.get(k) == Some(v),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Filter {
    include_labels: Vec<LabelRule>,
    exclude_labels: Vec<LabelRule>,
    include_names: Vec<Regex>,
    exclude_names: Vec<Regex>,
}

impl Filter {
    pub fn from_config(c: &Config) -> Result<Filter, Error> {
        let labels = |v: &[String]| -> Result<Vec<LabelRule>, Error> {
            v.iter().map(|s| LabelRule::parse(s)).collect()
        };
        let names = |v: &[String]| -> Result<Vec<Regex>, Error> {
            v.iter()
                .map(|s| {
                    Regex::new(s).map_err(|e| {
                        Error::with_source(ErrorKind::Config, format!("bad name regex {s:?}"), e)
                    })
                })
                .collect()
        };
        Ok(Filter {
            include_labels: labels(&c.include_labels)?,
            exclude_labels: labels(&c.exclude_labels)?,
            include_names: names(&c.include_names)?,
            exclude_names: names(&c.exclude_names)?,
        })
    }

    /// `name` without the leading `/`.
    pub fn matches(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        let excluded = self.exclude_labels.iter().any(|r| r.matches(labels))
            || self.exclude_names.iter().any(|r| r.is_match(name));
        if excluded {
            return false;
        }
        if self.include_labels.is_empty() && self.include_names.is_empty() {
            return true;
        }
        self.include_labels.iter().any(|r| r.matches(labels))
            || self.include_names.iter().any(|r| r.is_match(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn filter(inc_l: &[&str], exc_l: &[&str], inc_n: &[&str], exc_n: &[&str]) -> Filter {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        let c = Config {
            include_labels: s(inc_l),
            exclude_labels: s(exc_l),
            include_names: s(inc_n),
            exclude_names: s(exc_n),
            ..Config::default()
        };
        Filter::from_config(&c).unwrap()
    }

    #[test]
    fn default_includes_everything() {
        assert!(filter(&[], &[], &[], &[]).matches("x", &labels(&[])));
    }

    #[test]
    fn include_by_label_or_name_and_exclude_wins() {
        let f = filter(&["ci", "team=a"], &["skip=yes"], &["^job-"], &["-debug$"]);
        assert!(f.matches("x", &labels(&[("ci", "")])));
        assert!(f.matches("x", &labels(&[("team", "a")])));
        assert!(!f.matches("x", &labels(&[("team", "b")])));
        assert!(f.matches("job-1", &labels(&[])));
        assert!(!f.matches("other", &labels(&[])));
        assert!(!f.matches("job-1-debug", &labels(&[])));
        assert!(!f.matches("job-1", &labels(&[("skip", "yes")])));
        assert!(f.matches("job-1", &labels(&[("skip", "no")])));
    }

    #[test]
    fn bad_rules_are_config_errors() {
        let c = Config {
            include_names: vec!["(".into()],
            ..Config::default()
        };
        assert_eq!(
            Filter::from_config(&c).unwrap_err().kind(),
            ErrorKind::Config
        );
        let c = Config {
            exclude_labels: vec!["=v".into()],
            ..Config::default()
        };
        assert!(Filter::from_config(&c).is_err());
    }
}
