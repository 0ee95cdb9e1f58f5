//! Child processes of the benchmark (nginx, the gateway, sim-host): start, readiness, RSS, stop.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::load;

/// A free loopback port (bound then released; good enough on a quiet machine).
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    /// Spawns `cmd`, with stdout/stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Self> {
        let out =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("spawn {name}: {cmd:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
        })
    }

    /// Process id, for `/proc/<pid>/status`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the process has already exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(st) = self.child.try_wait()? {
            bail!("{} exited early with {st}", self.name);
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first so nginx's master takes its worker down and the gateway shuts down cleanly.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `GET path` on `addr` answers with any HTTP status.
pub fn wait_http(
    proc: &mut Proc,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        proc.check_alive()?;
        if load::one_shot(addr, "GET", path, b"").is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not answer GET {path} on {addr} within {timeout:?}",
                proc.name
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("{name} missing in /proc/{pid}/status"))?;
        let kib = line[name.len()..].trim().trim_end_matches("kB").trim();
        kib.parse()
            .with_context(|| format!("bad {name} line {line:?}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// The nginx binary, if installed.
pub fn nginx_bin() -> Option<PathBuf> {
    [
        "/usr/sbin/nginx",
        "/usr/local/sbin/nginx",
        "/usr/local/nginx/sbin/nginx",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .or_else(|| {
        let out = Command::new("sh")
            .args(["-c", "command -v nginx"])
            .output()
            .ok()?;
        let p = String::from_utf8(out.stdout).ok()?;
        let p = p.trim();
        (!p.is_empty()).then(|| PathBuf::from(p))
    })
}

/// Writes `conf` into `dir` and runs `nginx -p dir -c name -g 'daemon off;'` in the foreground.
pub fn start_nginx(
    bin: &Path,
    dir: &Path,
    name: &str,
    conf: &str,
    ports: &[u16],
) -> anyhow::Result<Proc> {
    std::fs::create_dir_all(dir.join("tmp"))?;
    let conf_path = dir.join(name);
    std::fs::write(&conf_path, conf)?;
    let mut cmd = Command::new(bin);
    cmd.arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join(format!("{name}.error.log")))
        .arg("-c")
        .arg(&conf_path)
        .args(["-g", "daemon off;"]);
    let mut p = Proc::spawn(
        &format!("nginx ({name})"),
        cmd,
        &dir.join(format!("{name}.out")),
    )?;
    for port in ports {
        let addr = SocketAddr::from(([127, 0, 0, 1], *port));
        wait_http(&mut p, addr, "/health", Duration::from_secs(10))
            .with_context(|| format!("nginx {name}: see {}", dir.display()))?;
    }
    Ok(p)
}

/// Fills `{{KEY}}` placeholders.
pub fn fill(template: &str, vars: &[(&str, String)]) -> String {
    let mut s = template.to_owned();
    for (k, v) in vars {
        s = s.replace(&format!("{{{{{k}}}}}"), v);
    }
    s
}
