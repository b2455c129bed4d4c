//! Include/exclude name filters for topics and groups.

/// Include/exclude patterns with `*` (any run) and `?` (one character).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NameFilter {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl NameFilter {
    /// A filter; empty `include` means everything.
    pub fn new(include: Vec<String>, exclude: Vec<String>) -> NameFilter {
        NameFilter { include, exclude }
    }

    /// This filter, also excluding `pattern`.
    #[must_use]
    pub fn excluding(mut self, pattern: &str) -> NameFilter {
        self.exclude.push(pattern.to_string());
        self
    }

    /// True when `name` is included and not excluded.
    pub fn allows(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| glob(p, name)))
            && !self.exclude.iter().any(|p| glob(p, name))
    }
}

/// Wildcard match: `*` any run of characters, `?` exactly one.
pub(crate) fn glob(pattern: &str, name: &str) -> bool {
    wildmatch::WildMatch::new(pattern).matches(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_filters() {
        let filter = NameFilter::new(vec!["order*".into(), "pay?".into()], vec!["*_test".into()]);
        assert!(filter.allows("orders"));
        assert!(filter.allows("pay1"));
        assert!(!filter.allows("pay12"));
        assert!(!filter.allows("orders_test"));
        assert!(!filter.allows("billing"));
        assert!(NameFilter::default().allows("anything"));
        assert!(glob("*a*b*", "xxaxxbxx"));
        assert!(!glob("a*b", "ab_"));
    }
}
