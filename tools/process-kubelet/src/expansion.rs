//! `$(VAR)` expansion, and the ordered environment it expands against.
//!
//! Kubernetes expands `$(NAME)` in `env` values, `command`, `args` and
//! `subPathExpr`: `$$` is a literal `$`, a reference to an undefined variable
//! stays as written, and an unterminated `$(` is left alone. Pure.

use std::collections::HashMap;

/// An ordered environment; setting a name again replaces its value in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    vars: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl Environment {
    /// Define or redefine `name`.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let (name, value) = (name.into(), value.into());
        match self.index.get(&name) {
            Some(&i) => self.vars[i].1 = value,
            None => {
                self.index.insert(name.clone(), self.vars.len());
                self.vars.push((name, value));
            }
        }
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&i| self.vars[i].1.as_str())
    }

    /// All variables, in definition order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// `$(VAR)` expansion against this environment.
    pub fn expand(&self, input: &str) -> String {
        expand(input, |name| self.get(name))
    }
}

/// Kubernetes `$(VAR)` expansion. `$$` is a literal `$`; `$(NAME)` becomes
/// the value of NAME, or stays `$(NAME)` if `lookup` does not know it; an
/// unterminated `$(` and a `$` before anything else stay as they are.
pub fn expand<'a>(input: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(close) => {
                    let name = &inner[..close];
                    match lookup(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[close + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let vars = BTreeMap::from([("A", "1"), ("B", "two")]);
        let lookup = |n: &str| vars.get(n).copied();
        assert_eq!(expand("$(A)-$(B)", lookup), "1-two");
        assert_eq!(expand("x$(MISSING)y", lookup), "x$(MISSING)y");
        assert_eq!(expand("$$(A)", lookup), "$(A)");
        assert_eq!(expand("$$$(A)", lookup), "$1");
        assert_eq!(expand("cost $5 $(A", lookup), "cost $5 $(A");
        assert_eq!(expand("end$", lookup), "end$");
        assert_eq!(expand("$()", lookup), "$()");
        assert_eq!(expand("no vars", lookup), "no vars");
    }

    #[test]
    fn redefinition_keeps_the_position() {
        let mut env = Environment::default();
        env.set("A", "1");
        env.set("B", "2");
        env.set("A", "3");
        assert_eq!(env.iter().collect::<Vec<_>>(), vec![("A", "3"), ("B", "2")]);
        assert_eq!(env.expand("$(A)$(B)$(C)"), "32$(C)");
    }
}
