//! Sensitivity classes and sets of them.

use std::fmt;

/// A sensitivity class. Every event field carries one; a route grants a set of them.
/// The discriminants equal the `henvis.options.v1.Sensitivity` enum numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Class {
    /// Routing and coordination facts.
    Basic = 1,
    /// Who the child is.
    Identity = 2,
    /// Where the child is or was.
    Location = 3,
    /// Health findings.
    Health = 4,
    /// Social circumstances and the guardian's plans.
    Social = 5,
    /// How the child was exploited.
    Exploitation = 6,
    /// The criminal investigation.
    Criminal = 7,
}

impl Class {
    /// Every class, in enum order.
    pub const ALL: [Class; 7] = [
        Class::Basic,
        Class::Identity,
        Class::Location,
        Class::Health,
        Class::Social,
        Class::Exploitation,
        Class::Criminal,
    ];

    /// The class with the given proto enum number.
    pub fn from_number(n: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|c| *c as i32 == n)
    }

    /// The upper-case name used in rule files.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Basic => "BASIC",
            Class::Identity => "IDENTITY",
            Class::Location => "LOCATION",
            Class::Health => "HEALTH",
            Class::Social => "SOCIAL",
            Class::Exploitation => "EXPLOITATION",
            Class::Criminal => "CRIMINAL",
        }
    }
}

impl std::str::FromStr for Class {
    type Err = String;
    /// Parses the upper-case name used in rule files and records.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| {
            format!("class `{s}`: expected one of BASIC, IDENTITY, LOCATION, HEALTH, SOCIAL, EXPLOITATION, CRIMINAL")
        })
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of classes, as a bit set: cheap to copy, union and test on the hot path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ClassSet(u8);

impl ClassSet {
    /// The empty set.
    pub const EMPTY: ClassSet = ClassSet(0);

    /// Whether the set holds `c`.
    pub fn contains(self, c: Class) -> bool {
        self.0 & (1 << c as u8) != 0
    }
    /// Adds `c`.
    pub fn insert(&mut self, c: Class) {
        self.0 |= 1 << c as u8;
    }
    /// The union of two sets.
    pub fn union(self, other: ClassSet) -> ClassSet {
        ClassSet(self.0 | other.0)
    }
    /// The classes in `self` that are not in `other`.
    pub fn difference(self, other: ClassSet) -> ClassSet {
        ClassSet(self.0 & !other.0)
    }
    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// The classes, in enum order.
    pub fn iter(self) -> impl Iterator<Item = Class> {
        Class::ALL.into_iter().filter(move |c| self.contains(*c))
    }
}

impl FromIterator<Class> for ClassSet {
    fn from_iter<I: IntoIterator<Item = Class>>(iter: I) -> Self {
        let mut s = ClassSet::EMPTY;
        for c in iter {
            s.insert(c);
        }
        s
    }
}

impl ClassSet {
    /// The classes in both sets.
    pub fn intersection(self, other: ClassSet) -> ClassSet {
        ClassSet(self.0 & other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_class_reads_back_from_its_name_and_serde_agrees() {
        for c in Class::ALL {
            assert_eq!(c.as_str().parse::<Class>(), Ok(c));
            assert_eq!(serde_json::to_value(c).unwrap(), serde_json::json!(c.as_str()));
        }
        assert!("basic".parse::<Class>().is_err());
    }

    #[test]
    fn set_operations_agree_with_membership() {
        let a: ClassSet = [Class::Basic, Class::Health].into_iter().collect();
        let b: ClassSet = [Class::Health, Class::Criminal].into_iter().collect();
        assert!(a.contains(Class::Basic) && !a.contains(Class::Criminal));
        assert_eq!(a.union(b).iter().count(), 3);
        assert_eq!(a.difference(b).iter().collect::<Vec<_>>(), vec![Class::Basic]);
        for c in Class::ALL {
            assert_eq!(Class::from_number(c as i32), Some(c));
        }
        assert_eq!(Class::from_number(0), None);
    }
}
