//! `kubectl kache` against the real API server: before the chart, it says the CRD is
//! missing; during a scale, `status` shows the move (Rebalancing, partitions moved) and
//! `watch` follows it to the end; `put`, `get`, `locate` and `del` round-trip through the
//! pod proxy with the generated admin token (`Kache-Authorization`, since the proxy
//! strips `Authorization`); a wrong name names the namespace.
//!
//! The binary is the one tests/e2e/run.sh builds (`cargo build -p kubectl-kache`), found
//! in the target dir and put first on PATH, so kubectl runs it as a plugin.

use std::sync::Mutex as StdMutex;

use super::*;

/// The directory of the built `kubectl-kache`.
fn plugin_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo_root().join("target"), PathBuf::from);
    let dir = target.join("debug");
    assert!(
        dir.join("kubectl-kache").exists(),
        "build the plugin first: cargo build -p kubectl-kache (tests/e2e/run.sh does)"
    );
    dir
}

/// `kubectl kache ARGS` with the plugin on PATH: (success, stdout, stderr).
pub fn kubectl_kache(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![plugin_dir()];
    dirs.extend(std::env::split_paths(&path));
    let mut command = Command::new("kubectl");
    command
        .arg("kache")
        .args(args)
        .env("PATH", std::env::join_paths(dirs).unwrap())
        .env_remove("KACHE_TOKEN");
    let output = super::output(command, stdin);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Before the chart is installed: the plugin says how to install the CRD.
pub fn says_the_crd_is_missing() {
    let (ok, _, stderr) = kubectl_kache(&["-n", NS, "status", "scale"], None);
    assert!(!ok, "status without the CRD fails");
    assert!(
        stderr.contains("the CacheCluster CRD is not installed")
            && stderr.contains("helm install kache"),
        "{stderr}"
    );
    log("kubectl kache without the CRD: says to install it");
}

/// `kubectl kache status` run again and again while a scale runs, and `watch` once.
pub struct DuringScale {
    stop: Arc<AtomicBool>,
    samples: Arc<StdMutex<Vec<String>>>,
    sampler: Option<std::thread::JoinHandle<()>>,
    watch: std::process::Child,
    watch_path: PathBuf,
}

impl DuringScale {
    /// Starts sampling `status NAME` and a `watch NAME` (which waits for the move).
    pub fn start(name: &str) -> Self {
        let watch_path = out_dir().join("kubectl-kache-watch.txt");
        let out = std::fs::File::create(&watch_path).unwrap();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![plugin_dir()];
        dirs.extend(std::env::split_paths(&path));
        let watch = Command::new("kubectl")
            .args(["kache", "-n", NS, "watch", name, "--timeout", "300s"])
            .env("PATH", std::env::join_paths(dirs).unwrap())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(StdMutex::new(Vec::new()));
        let sampler = {
            let (stop, samples, name) = (stop.clone(), samples.clone(), name.to_owned());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (ok, stdout, stderr) = kubectl_kache(&["-n", NS, "status", &name], None);
                    let sample = if ok {
                        stdout
                    } else {
                        format!("FAILED: {stderr}")
                    };
                    samples.lock().unwrap().push(sample);
                    std::thread::sleep(Duration::from_millis(300));
                }
            })
        };
        Self {
            stop,
            samples,
            sampler: Some(sampler),
            watch,
            watch_path,
        }
    }

    /// Stops sampling, waits for the watch to end by itself, and checks both showed the
    /// move.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
        let samples = std::mem::take(&mut *self.samples.lock().unwrap());
        let during = samples.iter().find(|s| {
            // The move, counted or not yet (a fast move is over before the operator
            // has counted its partitions), next to the members' own rows.
            s.contains("Rebalancing epoch")
                && (s.contains("partitions moved") || s.contains("partitions not counted yet"))
        });
        std::fs::write(
            out_dir().join("kubectl-kache-status.txt"),
            samples.join("\n----\n"),
        )
        .unwrap();
        let during = during.unwrap_or_else(|| {
            panic!(
                "no `kubectl kache status` of {} showed the move:\n{}",
                samples.len(),
                samples.last().map_or("", String::as_str)
            )
        });
        assert!(
            during.contains("MEMBERS") && during.contains("CONDITIONS"),
            "{during}"
        );
        log(&format!("kubectl kache status during the scale:\n{during}"));

        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = self.watch.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "kubectl kache watch did not end after the move"
            );
            std::thread::sleep(Duration::from_millis(500));
        };
        let transcript = std::fs::read_to_string(&self.watch_path).unwrap_or_default();
        log(&format!(
            "kubectl kache watch during the scale:\n{transcript}"
        ));
        assert!(status.success(), "watch failed:\n{transcript}");
        assert!(
            transcript.contains("-> Rebalancing") || transcript.contains("partitions moved ("),
            "the watch showed the move:\n{transcript}"
        );
        assert!(transcript.contains("done: epoch"), "{transcript}");
    }
}

impl Drop for DuringScale {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.watch.kill();
        let _ = self.watch.wait();
    }
}

/// Keys round-trip through the pod proxy, `locate` names owners that are members, and a
/// wrong name says where it looked.
pub async fn keys_round_trip(client: &Client, name: &str) {
    let ns = ["-n", NS];
    let run = |args: &[&str], stdin: Option<&str>| {
        let args: Vec<&str> = ns.iter().chain(args).copied().collect();
        kubectl_kache(&args, stdin)
    };
    let (ok, _, stderr) = run(&["put", name, "plugin/key 1", "from-the-plugin"], None);
    assert!(ok, "put: {stderr}");
    let (ok, stdout, stderr) = run(&["get", name, "plugin/key 1"], None);
    assert!(ok, "get: {stderr}");
    assert_eq!(stdout, "from-the-plugin");
    let (ok, _, stderr) = run(
        &["put", name, "plugin-stdin", "--ttl", "600"],
        Some("piped value"),
    );
    assert!(ok, "put from stdin: {stderr}");
    assert_eq!(run(&["get", name, "plugin-stdin"], None).1, "piped value");

    let (ok, stdout, stderr) = run(&["locate", name, "plugin/key 1"], None);
    assert!(ok, "locate: {stderr}");
    let members: Vec<String> = cc_status(client, name).await["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "Member")
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect();
    let owners = stdout
        .lines()
        .find_map(|l| l.strip_prefix("owners"))
        .unwrap_or_else(|| panic!("no owners line:\n{stdout}"));
    assert!(owners.contains("(primary)"), "{stdout}");
    assert!(
        members.iter().any(|m| owners.contains(m.as_str())),
        "the owners {owners} are members {members:?}"
    );
    log(&format!("kubectl kache locate:\n{stdout}"));

    let (ok, _, stderr) = run(&["del", name, "plugin/key 1"], None);
    assert!(ok, "del: {stderr}");
    let (ok, _, stderr) = run(&["get", name, "plugin/key 1"], None);
    assert!(!ok && stderr.contains("not found"), "{stderr}");

    let (ok, _, stderr) = run(&["status", "no-such-cluster"], None);
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "no CacheCluster \"no-such-cluster\" in namespace \"{NS}\""
        )) && stderr.contains("kubectl get cachecluster -A"),
        "{stderr}"
    );
    let (ok, _, stderr) = run(&["--token", "wrong", "get", name, "plugin-stdin"], None);
    assert!(!ok && stderr.contains("refused the token"), "{stderr}");
    log("kubectl kache put/get/locate/del round-trip through the pod proxy");
}
