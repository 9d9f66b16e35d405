//! A throwaway PostgreSQL cluster: `initdb` into a temporary directory, `pg_ctl start` on a
//! free loopback port with trust authentication, stopped and removed on drop (and by a
//! watchdog process if the test process dies without dropping it).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A PostgreSQL server this process started and owns.
pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PgCluster {
    /// Starts a new cluster. Fails with a clear message when no PostgreSQL binaries exist
    /// (`scripts/test.sh` installs them on a fresh machine).
    pub fn start() -> std::io::Result<PgCluster> {
        let bin = find_bin_dir().ok_or_else(|| {
            std::io::Error::other("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql, or set DATABASE_URL")
        })?;
        let as_postgres = running_as_root();
        let dir = std::env::temp_dir().join(format!("minipay-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        if as_postgres {
            run(Command::new("chown").arg("-R").arg("postgres:postgres").arg(&dir))?;
        }
        let cluster = PgCluster { dir, bin, port: free_port()?, as_postgres };
        cluster.run_pg(
            "initdb",
            &["-D", &cluster.data(), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"],
        )?;
        cluster.start_server()?;
        cluster.spawn_watchdog();
        Ok(cluster)
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`: a superuser URL for admin work.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts (or restarts after [`PgCluster::stop_server`]) the server on the same port.
    pub fn start_server(&self) -> std::io::Result<()> {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=400 -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log");
        self.run_pg(
            "pg_ctl",
            &["-D", &self.data(), "-l", &log.to_string_lossy(), "-o", &opts, "-w", "-t", "60", "start"],
        )
    }

    /// Stops the server immediately (connections are cut), keeping the data.
    pub fn stop_server(&self) -> std::io::Result<()> {
        self.run_pg("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"])
    }

    fn data(&self) -> String {
        self.dir.join("data").to_string_lossy().into_owned()
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.arg("-u").arg("postgres").arg("--").arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn run_pg(&self, tool: &str, args: &[&str]) -> std::io::Result<()> {
        run(self.command(tool).args(args))
    }

    /// A detached shell that waits for this process to end, then stops the server and
    /// removes the directory: statics are never dropped, and tests may be killed.
    fn spawn_watchdog(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = if self.as_postgres {
            format!("runuser -u postgres -- {} -D {} -m immediate stop", pg_ctl.display(), self.data())
        } else {
            format!("{} -D {} -m immediate stop", pg_ctl.display(), self.data())
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            dir = self.dir.display()
        );
        let _ = Command::new("setsid")
            .arg("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.stop_server();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(cmd: &mut Command) -> std::io::Result<()> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{:?} failed: {}{}",
            cmd,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// `pg_ctl` on PATH (resolving symlinks to the real bin dir), else the newest
/// `/usr/lib/postgresql/<v>/bin`.
fn find_bin_dir() -> Option<PathBuf> {
    let has_tools = |d: &Path| d.join("initdb").exists() && d.join("pg_ctl").exists() && d.join("postgres").exists();
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            let c = d.join("pg_ctl");
            if c.exists() {
                if let Some(real) = std::fs::canonicalize(&c).ok().and_then(|p| p.parent().map(Path::to_path_buf)) {
                    if has_tools(&real) {
                        return Some(real);
                    }
                }
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p): &(u32, PathBuf)| has_tools(p))
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}
