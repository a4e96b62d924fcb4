//! How every henvis service reads its configuration: a TOML file (`--config FILE` or
//! `HENVIS_CONFIG`), then `HENVIS_*` environment variables, then flags — each overriding
//! the one before. The file's keys are the settings' names as in `--check-config`'s output
//! (`nats_url`, `pki_dir`, …); an unknown key, a table or a list is refused, naming it.
//! `--check-config` validates everything the service reads before it opens a port, prints
//! the settings in effect with where each came from, and exits.

use std::{collections::BTreeMap, ffi::OsString, path::PathBuf};

use anyhow::Context as _;
use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches, parser::ValueSource};

const CONFIG: &str = "config";
const CHECK: &str = "check_config";

/// A service's parsed command line.
#[derive(Debug)]
pub struct Parsed<A> {
    /// The service's settings.
    pub args: A,
    /// `--check-config` was given: validate, print, exit.
    pub check_config: bool,
    settings: Vec<Setting>,
}

/// One setting in effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// Its name (the file key; the flag is `--` and the name with `-`).
    pub name: String,
    /// Its value as given (`None`: not set); secrets are never kept here.
    pub value: Option<String>,
    /// `flag`, `env`, `file`, `default` or `unset`.
    pub source: &'static str,
}

/// Whether a setting's value is a secret (never printed). henvis takes secrets as files,
/// so today no setting is one; this keeps a future one out of the output.
fn secret(name: &str) -> bool {
    ["secret", "password", "token", "passphrase"]
        .iter()
        .any(|w| name.contains(w))
}

fn with_config_args(cmd: Command) -> Command {
    cmd.arg(
        Arg::new(CONFIG)
            .long("config")
            .env("HENVIS_CONFIG")
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .help("TOML configuration file; environment variables and flags override it"),
    )
    .arg(
        Arg::new(CHECK)
            .long("check-config")
            .action(ArgAction::SetTrue)
            .help("Validate the configuration and every file it names, print the settings in effect, and exit"),
    )
}

/// The ids of the settings `cmd` takes from a file.
fn setting_ids(cmd: &Command) -> Vec<String> {
    cmd.get_arguments()
        .map(|a| a.get_id().as_str().to_owned())
        .filter(|id| !matches!(id.as_str(), "help" | "version" | CONFIG | CHECK))
        .collect()
}

/// Reads `path` as a flat TOML table of settings known to `cmd`.
fn read_file(path: &std::path::Path, cmd: &Command) -> anyhow::Result<BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading the configuration `{}`", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("the configuration `{}`", path.display()))?;
    let known = setting_ids(cmd);
    let mut out = BTreeMap::new();
    for (key, value) in table {
        anyhow::ensure!(
            known.contains(&key),
            "the configuration `{}`: unknown key `{key}`; expected one of: {}",
            path.display(),
            known.join(", ")
        );
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => anyhow::bail!(
                "the configuration `{}`: key `{key}` must be a string, number or boolean, not a {}",
                path.display(),
                other.type_str()
            ),
        };
        out.insert(key, text);
    }
    Ok(out)
}

/// Parses the process's command line (see the module documentation).
pub fn parse<A: CommandFactory + FromArgMatches>() -> anyhow::Result<Parsed<A>> {
    parse_from(std::env::args_os())
}

/// Parses `argv` (the program name first). Help, version and usage errors print and exit as
/// clap does; a bad configuration file is an error naming the file and the key.
pub fn parse_from<A, I, T>(argv: I) -> anyhow::Result<Parsed<A>>
where
    A: CommandFactory + FromArgMatches,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    let mut cmd = with_config_args(A::command());
    // the file first: its values become the defaults, under the environment and flags
    let early = cmd.clone().ignore_errors(true).try_get_matches_from(&argv).ok();
    let file = early.as_ref().and_then(|m| m.get_one::<PathBuf>(CONFIG).cloned());
    let from_file = match &file {
        Some(p) => read_file(p, &cmd)?,
        None => BTreeMap::new(),
    };
    for (key, value) in &from_file {
        cmd = cmd.mut_arg(key.as_str(), |a| a.default_value(value.clone()).required(false));
    }
    let matches = cmd.clone().try_get_matches_from(&argv).unwrap_or_else(|e| e.exit());
    let args = A::from_arg_matches(&matches).map_err(|e| anyhow::anyhow!("{e}"))?;
    let settings = settings(&cmd, &matches, &from_file);
    Ok(Parsed {
        args,
        check_config: matches.get_flag(CHECK),
        settings,
    })
}

fn settings(cmd: &Command, matches: &ArgMatches, from_file: &BTreeMap<String, String>) -> Vec<Setting> {
    setting_ids(cmd)
        .into_iter()
        .map(|name| {
            let value = matches.get_raw(&name).map(|vs| {
                vs.map(|v| v.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(",")
            });
            let source = match matches.value_source(&name) {
                Some(ValueSource::CommandLine) => "flag",
                Some(ValueSource::EnvVariable) => "env",
                Some(ValueSource::DefaultValue) if from_file.contains_key(&name) => "file",
                Some(_) => "default",
                None => "unset",
            };
            let value = if secret(&name) {
                value.map(|_| "<secret>".to_owned())
            } else {
                value
            };
            Setting { name, value, source }
        })
        .collect()
}

impl<A> Parsed<A> {
    /// The same command line with its settings mapped (e.g. to the flattened part a
    /// service's library takes).
    pub fn map<B>(self, f: impl FnOnce(A) -> B) -> Parsed<B> {
        Parsed {
            args: f(self.args),
            check_config: self.check_config,
            settings: self.settings,
        }
    }

    /// The settings in effect.
    pub fn settings(&self) -> &[Setting] {
        &self.settings
    }

    /// The settings in effect as TOML (usable as a configuration file), each with where it
    /// came from.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for s in &self.settings {
            match &s.value {
                Some(v) => {
                    let value = if v.parse::<i64>().is_ok() || v == "true" || v == "false" {
                        v.clone()
                    } else {
                        toml::Value::String(v.clone()).to_string()
                    };
                    out.push_str(&format!("{} = {value}  # {}\n", s.name, s.source));
                }
                None => out.push_str(&format!("# {} is not set\n", s.name)),
            }
        }
        out
    }

    /// For `--check-config`: runs `validate` and prints the outcome; `Ok(true)` when the
    /// process should exit now (the check was asked for and passed).
    pub fn check(&self, validate: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<bool> {
        let result = validate();
        if !self.check_config {
            return result.map(|()| false);
        }
        print!("{}", self.render());
        result?;
        println!("# configuration OK");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser, Debug)]
    struct Demo {
        #[arg(long, env = "HENVIS_TEST_CLI_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        #[arg(long, env = "HENVIS_TEST_CLI_DIR")]
        pki_dir: PathBuf,
        #[arg(long, env = "HENVIS_TEST_CLI_WINDOW", default_value_t = 8)]
        window: usize,
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(f.path(), text).expect("write");
        f
    }

    #[test]
    fn the_file_sets_what_the_flags_do_not_and_flags_win() {
        let f = file("pki_dir = \"/from/file\"\nwindow = 16\nnats_url = \"nats://file:4222\"\n");
        let p = parse_from::<Demo, _, _>(["demo", "--config", f.path().to_str().expect("utf-8"), "--window", "32"])
            .expect("parsed");
        assert_eq!(p.args.pki_dir, PathBuf::from("/from/file"));
        assert_eq!(p.args.window, 32);
        assert_eq!(p.args.nats_url, "nats://file:4222");
        let sources: BTreeMap<_, _> = p.settings().iter().map(|s| (s.name.as_str(), s.source)).collect();
        assert_eq!(sources["window"], "flag");
        assert_eq!(sources["pki_dir"], "file");
        assert!(p.render().contains("window = 32  # flag"), "{}", p.render());
    }

    #[test]
    fn an_unknown_key_or_a_table_is_refused_by_name() {
        let f = file("pki_dir = \"/x\"\nnats_urls = \"typo\"\n");
        let e = parse_from::<Demo, _, _>(["demo", "--config", f.path().to_str().expect("utf-8")])
            .expect_err("refused")
            .to_string();
        assert!(e.contains("unknown key `nats_urls`") && e.contains("nats_url"), "{e}");
        let f = file("pki_dir = \"/x\"\n[window]\na = 1\n");
        let e = parse_from::<Demo, _, _>(["demo", "--config", f.path().to_str().expect("utf-8")])
            .expect_err("refused")
            .to_string();
        assert!(e.contains("`window` must be a string, number or boolean"), "{e}");
    }

    #[test]
    fn a_bad_value_in_the_file_is_a_usage_error_naming_the_setting() {
        let f = file("pki_dir = \"/x\"\nwindow = \"many\"\n");
        let cmd = with_config_args(Demo::command());
        let from = read_file(f.path(), &cmd).expect("read");
        let cmd = cmd.mut_arg("window", |a| a.default_value(from["window"].clone()));
        let e = cmd
            .try_get_matches_from(["demo", "--pki-dir", "/x"])
            .expect_err("refused")
            .to_string();
        assert!(e.contains("--window") && e.contains("many"), "{e}");
    }
}
