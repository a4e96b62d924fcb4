//! Privacy-preserving linkage: when two agencies report what may be the same child
//! independently, the broker can say "this looks like case X" without either agency seeing
//! the other's identity data. From the identity fields of a report this module makes the
//! *inputs* of keyed tokens (normalised names with the birth date, and with each
//! nationality); the router turns them into HMAC tokens with a key only the broker holds
//! and matches tokens, never names. A match only proposes a link: each case's guardian or
//! municipality confirms or rejects it.
//!
//! Normalisation tolerates the spelling variants reports of one child carry across
//! languages and agencies: case, diacritics and transliteration (`Müller`/`Mueller`,
//! `Ștefan`/`Stefan`, `Aleksandra`/`Alexandra`, `Jana`/`Yana`), doubled letters, the order
//! of given and family names, and separators. A birth date is required: names alone match
//! too many children. There is no personal identity number in the events today; one would
//! be a token of its own.

use std::collections::BTreeSet;

/// The identity fields of a report.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    /// Given name(s).
    pub given_name: &'a str,
    /// Family name(s).
    pub family_name: &'a str,
    /// Other names the child is known by.
    pub aliases: &'a [String],
    /// Claimed date of birth, `YYYY-MM-DD` (empty: unknown).
    pub birth_date: &'a str,
    /// Nationalities, ISO 3166-1 alpha-2.
    pub nationalities: &'a [String],
}

/// What a token stands for (shown to the people asked to confirm a link).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchKind {
    /// The same names (in any order and spelling variant) and birth date.
    NamesAndBirthDate,
    /// The same names, birth date and a nationality.
    NamesBirthDateAndNationality,
    /// An alias of one report is a name or alias of the other, with the same birth date.
    AliasAndBirthDate,
}

impl MatchKind {
    /// Its name (as serialised).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NamesAndBirthDate => "names_and_birth_date",
            Self::NamesBirthDateAndNationality => "names_birth_date_and_nationality",
            Self::AliasAndBirthDate => "alias_and_birth_date",
        }
    }

    /// In words.
    pub fn describe(self) -> &'static str {
        match self {
            Self::NamesAndBirthDate => "names and birth date",
            Self::NamesBirthDateAndNationality => "names, birth date and nationality",
            Self::AliasAndBirthDate => "an alias and birth date",
        }
    }
}

/// The spelling key of one name word: lower case, diacritics and transliterations folded,
/// letters only, doubled letters collapsed.
pub fn spelling_key(word: &str) -> String {
    let mut folded = String::with_capacity(word.len());
    for ch in word.chars().flat_map(char::to_lowercase) {
        let s: &str = match ch {
            'æ' | 'ä' => "ae",
            'ø' | 'ö' | 'œ' => "oe",
            'å' => "aa",
            'ü' => "ue",
            'ß' => "ss",
            'á' | 'à' | 'â' | 'ã' | 'ă' | 'ą' | 'ā' => "a",
            'é' | 'è' | 'ê' | 'ë' | 'ę' | 'ě' | 'ē' => "e",
            'í' | 'ì' | 'î' | 'ï' | 'ı' | 'ī' => "i",
            'ó' | 'ò' | 'ô' | 'õ' | 'ő' | 'ō' => "o",
            'ú' | 'ù' | 'û' | 'ű' | 'ů' | 'ū' => "u",
            'ç' | 'č' | 'ć' => "c",
            'ñ' | 'ń' | 'ň' => "n",
            'š' | 'ș' | 'ş' | 'ś' => "s",
            'ț' | 'ţ' | 'ť' => "t",
            'ž' | 'ź' | 'ż' => "z",
            'ł' => "l",
            'ğ' => "g",
            'ř' => "r",
            'ď' => "d",
            'ý' => "y",
            c if c.is_ascii_lowercase() => {
                folded.push(c);
                continue;
            }
            _ => continue,
        };
        folded.push_str(s);
    }
    // transliteration variants, longest first, applied once left to right
    const RULES: [(&str, &str); 17] = [
        ("sch", "s"),
        ("ae", "e"),
        ("oe", "o"),
        ("ue", "u"),
        ("aa", "a"),
        ("ks", "x"),
        ("cs", "x"),
        ("ph", "f"),
        ("th", "t"),
        ("kh", "h"),
        ("sh", "s"),
        ("ch", "k"),
        ("w", "v"),
        ("y", "i"),
        ("j", "i"),
        ("c", "k"),
        ("q", "k"),
    ];
    let mut out = String::with_capacity(folded.len());
    let mut rest = folded.as_str();
    'next: while !rest.is_empty() {
        for (from, to) in RULES {
            if let Some(r) = rest.strip_prefix(from) {
                out.push_str(to);
                rest = r;
                continue 'next;
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    // z/s and doubled letters
    let out = out.replace('z', "s");
    let mut collapsed = String::with_capacity(out.len());
    for c in out.chars() {
        if !collapsed.ends_with(c) {
            collapsed.push(c);
        }
    }
    collapsed
}

/// The spelling keys of every word of `names`, sorted and unique.
fn keys_of(names: &[&str]) -> BTreeSet<String> {
    names
        .iter()
        .flat_map(|n| n.split(|c: char| c.is_whitespace() || c == '-' || c == '\'' || c == '.' || c == ','))
        .map(spelling_key)
        .filter(|k| k.len() >= 2)
        .collect()
}

/// The inputs of a report's linkage tokens, each with what it stands for; none without a
/// well-formed birth date or without two name words.
pub fn token_inputs(id: &Identity<'_>) -> Vec<(MatchKind, String)> {
    let date = id.birth_date.trim();
    let well_formed = date.len() == 10 && date.bytes().enumerate().all(|(i, b)| matches!(i, 4 | 7) == (b == b'-'));
    if !well_formed {
        return Vec::new();
    }
    let mut out = Vec::new();
    let names = keys_of(&[id.given_name, id.family_name]);
    if names.len() >= 2 {
        let joined = names.iter().cloned().collect::<Vec<_>>().join(" ");
        out.push((MatchKind::NamesAndBirthDate, format!("nd|{joined}|{date}")));
        let nationalities: BTreeSet<String> = id
            .nationalities
            .iter()
            .map(|n| n.trim().to_ascii_uppercase())
            .filter(|n| !n.is_empty())
            .collect();
        for n in nationalities {
            out.push((
                MatchKind::NamesBirthDateAndNationality,
                format!("ndn|{joined}|{date}|{n}"),
            ));
        }
    }
    // every single-word name and each alias, with the birth date: an alias one agency
    // heard matches the name another wrote down
    let mut single: BTreeSet<String> = id
        .aliases
        .iter()
        .map(|a| keys_of(&[a.as_str()]).into_iter().collect::<Vec<_>>().join(" "))
        .filter(|k| !k.is_empty())
        .collect();
    if !id.aliases.is_empty() {
        single.extend(keys_of(&[id.given_name]));
    }
    for a in single {
        out.push((MatchKind::AliasAndBirthDate, format!("ad|{a}|{date}")));
    }
    out
}

/// A proposed link between two cases that look like the same child, and the answers of
/// each side (the case's guardian or its municipality). Ids only.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CaseLink {
    /// Its id (from the two case ids, so one pair has one link).
    pub id: String,
    /// The two cases, in id order.
    pub cases: [String; 2],
    /// What matched.
    pub matched_on: Vec<MatchKind>,
    /// When it was proposed, unix seconds.
    pub proposed_at: i64,
    /// Each side's answer, at most one per case.
    #[serde(default)]
    pub answers: Vec<LinkAnswer>,
}

/// One side's answer to a link.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinkAnswer {
    /// The side's case.
    pub case_id: String,
    /// The agency that answered (the case's guardian or municipality).
    pub by: String,
    /// Confirmed (the same child) or rejected.
    pub confirmed: bool,
    /// When, unix seconds.
    pub at: i64,
}

/// Where a link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Waiting for one side or both.
    Proposed,
    /// Both sides confirmed: the cases concern the same child.
    Confirmed,
    /// A side rejected it.
    Rejected,
}

impl CaseLink {
    /// The link of cases `a` and `b`: its id and the pair in order.
    pub fn new(a: &str, b: &str, matched_on: Vec<MatchKind>, at: i64) -> Self {
        let mut cases = [a.to_owned(), b.to_owned()];
        cases.sort();
        let id = {
            use sha2::{Digest, Sha256};
            hex::encode(&Sha256::digest(format!("{}|{}", cases[0], cases[1]).as_bytes())[..16])
        };
        Self {
            id,
            cases,
            matched_on,
            proposed_at: at,
            answers: Vec::new(),
        }
    }

    /// The other case of the link, seen from `case` (None: not a side).
    pub fn other(&self, case: &str) -> Option<&str> {
        match &self.cases {
            [a, b] if a == case => Some(b),
            [a, b] if b == case => Some(a),
            _ => None,
        }
    }

    /// Where it stands.
    pub fn state(&self) -> LinkState {
        if self.answers.iter().any(|a| !a.confirmed) {
            LinkState::Rejected
        } else if self
            .cases
            .iter()
            .all(|c| self.answers.iter().any(|a| &a.case_id == c && a.confirmed))
        {
            LinkState::Confirmed
        } else {
            LinkState::Proposed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(given: &str, family: &str, dob: &str, nat: &[&str]) -> BTreeSet<String> {
        let n: Vec<String> = nat.iter().map(|s| (*s).to_owned()).collect();
        token_inputs(&Identity {
            given_name: given,
            family_name: family,
            aliases: &[],
            birth_date: dob,
            nationalities: &n,
        })
        .into_iter()
        .map(|(_, t)| t)
        .collect()
    }

    fn shared(a: &BTreeSet<String>, b: &BTreeSet<String>) -> bool {
        a.intersection(b).next().is_some()
    }

    #[test]
    fn spelling_variants_of_one_name_meet() {
        for (a, b) in [
            ("Müller", "Mueller"),
            ("Ștefan", "Stefan"),
            ("Aleksandra", "Alexandra"),
            ("Jana", "Yana"),
            ("Philippa", "Filipa"),
            ("Søren", "Soeren"),
            ("Mohammed", "Mohamed"),
            ("Ionuț", "Ionut"),
        ] {
            assert_eq!(spelling_key(a), spelling_key(b), "{a} / {b}");
        }
        assert_ne!(spelling_key("Maria"), spelling_key("Mario"));
    }

    #[test]
    fn the_same_child_matches_in_any_order_and_spelling() {
        let police = inputs("Aleksandra Ștefania", "Popescu", "2010-03-04", &["RO"]);
        let ngo = inputs("Popescu", "Alexandra Stefania", "2010-03-04", &[]);
        assert!(shared(&police, &ngo));
    }

    #[test]
    fn another_child_does_not_match() {
        let a = inputs("Aleksandra", "Popescu", "2010-03-04", &["RO"]);
        // same names, another birth date
        assert!(!shared(&a, &inputs("Aleksandra", "Popescu", "2011-03-04", &["RO"])));
        // same birth date, another family name
        assert!(!shared(&a, &inputs("Aleksandra", "Ionescu", "2010-03-04", &["RO"])));
        // no birth date: nothing to match on
        assert!(inputs("Aleksandra", "Popescu", "", &["RO"]).is_empty());
        // one name word only
        assert!(inputs("Aleksandra", "", "2010-03-04", &["RO"]).is_empty());
    }

    #[test]
    fn a_link_is_confirmed_by_both_sides_and_rejected_by_either() {
        let mut l = CaseLink::new("b", "a", vec![MatchKind::NamesAndBirthDate], 1);
        assert_eq!(l.cases, ["a".to_owned(), "b".to_owned()]);
        assert_eq!(l.id, CaseLink::new("a", "b", vec![], 2).id, "one id per pair");
        assert_eq!(l.other("a"), Some("b"));
        assert_eq!(l.other("c"), None);
        let answer = |case: &str, confirmed| LinkAnswer {
            case_id: case.into(),
            by: "kommune-101".into(),
            confirmed,
            at: 3,
        };
        l.answers.push(answer("a", true));
        assert_eq!(l.state(), LinkState::Proposed);
        l.answers.push(answer("b", true));
        assert_eq!(l.state(), LinkState::Confirmed);
        l.answers[1].confirmed = false;
        assert_eq!(l.state(), LinkState::Rejected);
    }

    #[test]
    fn an_alias_meets_a_name() {
        let aliases = vec!["Sasha".to_owned()];
        let ngo: BTreeSet<String> = token_inputs(&Identity {
            given_name: "",
            family_name: "",
            aliases: &aliases,
            birth_date: "2010-03-04",
            nationalities: &[],
        })
        .into_iter()
        .map(|(_, t)| t)
        .collect();
        let police: BTreeSet<String> = token_inputs(&Identity {
            given_name: "Sascha",
            family_name: "Popescu",
            aliases: &["Sasha P".to_owned()],
            birth_date: "2010-03-04",
            nationalities: &[],
        })
        .into_iter()
        .map(|(_, t)| t)
        .collect();
        assert!(shared(&ngo, &police));
    }
}
