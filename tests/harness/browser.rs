//! A real headless Chromium, driven over WebDriver (chromedriver), with its own certificate
//! store: the henvis CA trusted and, when given, one person's client certificate, which
//! the managed policy installed by deploy/install-tools.sh presents to 127.0.0.1 by itself.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context as _;
use henvis_domain::Principal;

/// A browser session, closed (and its chromedriver killed) on drop.
pub struct Browser {
    /// The WebDriver client.
    pub client: fantoccini::Client,
    driver: Child,
    _home: tempfile::TempDir,
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| {
        format!(
            "running {:?} (deploy/install-tools.sh installs chromium, chromedriver, libnss3-tools)",
            cmd.get_program()
        )
    })?;
    anyhow::ensure!(
        out.status.success(),
        "{:?}: {}",
        cmd.get_program(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

impl Browser {
    /// A browser trusting the CA in `pki` and holding `person`'s certificate (none: a
    /// browser without any).
    pub async fn start(pki: &Path, person: Option<&Principal>) -> anyhow::Result<Self> {
        let home = tempfile::tempdir()?;
        let db = home.path().join(".pki/nssdb");
        std::fs::create_dir_all(&db)?;
        let sql = format!("sql:{}", db.display());
        run(Command::new("certutil").args(["-N", "-d", &sql, "--empty-password"]))?;
        run(Command::new("certutil")
            .args(["-A", "-d", &sql, "-n", "henvis-ca", "-t", "C,,", "-i"])
            .arg(pki.join("ca.pem")))?;
        if let Some(p) = person {
            let base = pki.join(p.path());
            let p12 = home.path().join("person.p12");
            run(Command::new("openssl")
                .args([
                    "pkcs12",
                    "-export",
                    "-passout",
                    "pass:",
                    "-name",
                    "henvis-person",
                    "-in",
                ])
                .arg(base.with_extension("pem"))
                .arg("-inkey")
                .arg(base.with_extension("key"))
                .arg("-out")
                .arg(&p12))?;
            run(Command::new("pk12util").args(["-d", &sql, "-W", "", "-i"]).arg(&p12))?;
        }
        let port = crate::free_addr()?.port();
        let log = std::fs::File::create(home.path().join("chromedriver.log"))?;
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .env("HOME", home.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting chromedriver (deploy/install-tools.sh installs it)")?;
        let url = format!("http://127.0.0.1:{port}");
        let addr = format!("127.0.0.1:{port}").parse()?;
        crate::wait_for("chromedriver", Duration::from_secs(20), || async move {
            crate::http_get(addr, "/status").await.ok().filter(|(s, _)| *s == 200)
        })
        .await?;
        let profile = home.path().join("profile");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let client = fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .context("a WebDriver session")?;
        Ok(Self {
            client,
            driver,
            _home: home,
        })
    }

    /// Saves a screenshot of the page as `<target>/screenshots/<name>.png` (not committed).
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let png = self.client.screenshot().await?;
        let exe = std::env::current_exe()?;
        let target = exe
            .ancestors()
            .find(|p| p.file_name().is_some_and(|n| n == "target"))
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        let dir = target.join("screenshots");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    /// Ends the session (the browser quits), then chromedriver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }

    /// The open page audited by axe-core (installed by deploy/install-tools.sh) against the
    /// WCAG 2.0/2.1 A and AA rules and axe's best practices: every violation as
    /// `rule (impact): help — the elements`, none when the page passes.
    pub async fn accessibility_violations(&self) -> anyhow::Result<Vec<String>> {
        let path = std::env::var_os("HENVIS_AXE_JS").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/axe/node_modules/axe-core/axe.min.js"),
            PathBuf::from,
        );
        let axe = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (deploy/install-tools.sh installs axe-core)", path.display()))?;
        self.client.execute(&axe, vec![]).await.context("loading axe-core")?;
        let found = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] } })
                   .then(r => done(r.violations.map(v => v.id + ' (' + v.impact + '): ' + v.help + ' — '
                     + v.nodes.map(n => n.target.join(' ')).join(', '))))
                   .catch(e => done(['axe failed: ' + e]));",
                vec![],
            )
            .await
            .context("running axe-core")?;
        Ok(serde_json::from_value(found)?)
    }

    /// The text of the page's `<main>`.
    pub async fn main_text(&self) -> anyhow::Result<String> {
        Ok(self.client.find(fantoccini::Locator::Css("main")).await?.text().await?)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
